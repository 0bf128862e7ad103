"""The node agent: applies MigLayouts to the GPUs of one node and reports back."""
