from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin


class SubprocessRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    """Selected with LAMBDA_RUNTIME_EXECUTOR=local-subprocess."""

    name = "local-subprocess"

    def load(self, *args, **kwargs):
        from earnings_sync_localstack_executor.executor import SubprocessRuntimeExecutor

        return SubprocessRuntimeExecutor
