"""The node's gRPC face: the frame API `livegen.v1.FrameService` (proto/livegen/v1/livegen.proto,
generated code in `livegen.grpcapi`). `service` answers the calls, `frames` converts the
pictures they carry, `scenes` makes GenerateStream's pictures on the device worker, `server`
runs it all beside the aiohttp app.
"""
