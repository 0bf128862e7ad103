"""The central operator: plans MigLayouts from pending pods and releases the pods."""
