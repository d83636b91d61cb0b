"""LocalStack Lambda runtime executor plugin: runs Python functions as local subprocesses."""
