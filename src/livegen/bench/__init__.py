"""`livegen bench`: benchmark scenarios; results go to bench/results/ as JSON plus a summary.

e2e (`e2e.py`): publisher → node → viewer latency against a plain aiortc loopback, same run.
fanout (`fanout.py`): one publisher, many viewers: node CPU and delivered frame rate per viewer
count, encode-once against per-viewer encoding, same run.
pipeline (`pipeline.py`): frames through the engine in this process, per preset: time per stage.
diffusion (`diffusion.py`): the diffusion stage's device timings (UNet, TAESD, compositing).
relay (`relay.py`): a stream pushed to 0, 1 and 3 RTMP outputs (nginx-rtmp) and recorded: node
CPU per output, publisher → node → nginx → player latency.
neighbour (`neighbour.py`): a stream measured alone, then beside a noisy one PATCHed to the
longest chain the node accepts: does it keep its frame rate and latency?
overload (`overload.py`): several heavy streams on one node: in-node latency against the budget,
read every few seconds.
soak (`soak.py`): one stream for minutes: the node's memory, threads and latency, row by row.
process (`process.py`): a video file through the engine per preset (`files.process`): real-time
factor and time per stage; then a live stream alone and beside a file job on the same worker.
all (`suite.py`): every scenario above with its committed arguments, each in its own process, as
one run of one clean commit; then the reports.
report: regenerate the results README and the project README's table from the committed
results, running nothing.

Every scenario runs through one driver (`driver.py`): the flags every scenario shares, the
JSON result and the results folder's README section, `--compare OLD.json` (after its run, how
the new result differs), and, when a run writes into the checkout's own bench/results/, the
project README's performance table (between its `livegen-bench:summary` markers), regenerated
from every result there. A scenario's module defines only what is its own; its flags are in
`options.py`, how its results read in `<scenario>_report.py`.
"""

from livegen.bench.driver import add_arguments, run_scenario

__all__ = ["add_arguments", "run_scenario"]
