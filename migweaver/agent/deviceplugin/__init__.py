"""The agent's kubelet device plugin for `nvidia.com/gpu` (API v1beta1, grpc.aio).

- `devices`: the virtual device ids the kubelet counts (pure);
- `gpus`: what the plugin needs of the node agent (GPUs, modes, health, fresh readings);
- `allocator`: `Allocate` from the pod's allocation annotation (the decision is the pure
  `migweaver.core.agent.binding`);
- `server`: the gRPC servicer, the registration with the kubelet and re-registration when
  the kubelet restarts;
- `api.proto` and the generated `api_pb2*.py` (`make proto`).
"""
