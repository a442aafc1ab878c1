"""`python -m tools.gpu_smoke`: one command that checks the CUDA path on a GPU machine.

Prepared before a GPU is at hand, so that a short loan of one answers every open
question in one run (about 10 minutes on a GPU; seconds with --quick on a CPU):

1. versions, providers and devices (ORT, CUDA wheels, NVML, nvidia-smi);
2. node placement per GPU provider, with ORT's fallbacks off;
3. whether pinned host allocation really works;
4. CPU vs GPU outputs through the service path (a real inference service, merged
   batches, two instance threads);
5. require_cuda's failure paths and a device_id that does not exist;
6. GPU memory across batch sizes 1..32;
7. the goal-4 figures: EfficientNet-Lite0 224x224, batching on vs off at c=32, served
   vs in-process ORT CUDA at the same batch size, IO binding on.

Sections that need CUDA are reported as skipped, with the reason, where there is none.
It writes `gpu_smoke.json` and `gpu_smoke.log` into --out.
"""
