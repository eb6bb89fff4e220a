"""Video files through the same effect chains, on the same device worker, as live streams.

`process.process_file` is the core: `livegen process` (`command`) runs it from the command line,
and file jobs run it inside the node, below the live streams. Import from the modules: this
package loads nothing itself, so that checking arguments stays quick.
"""
