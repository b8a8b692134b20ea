"""DeepSpeed ZeRO-2/3 for `seekrl train`: the config, the recipe checks, and what each Ray worker must set up.

GPU workers use DeepSpeed as usual (NCCL, bf16 from the recipe). CPU workers (`ray.use_gpu: false`) run the same
ZeRO code on DeepSpeed's CPU accelerator over the gloo process group that Ray Train's TorchTrainer already
created; no oneCCL is needed (DeepSpeed falls back to gloo when `oneccl_bindings_for_pytorch` is absent). Two things
differ from the GPU path and are handled here:

* accelerate picks no process-group backend for DeepSpeed without a GPU, so every rank would believe it is the only
  process; `prepare_worker` configures accelerate's state with gloo first and `grpo_kwargs` tells the trainer to use
  it (`accelerator_config.use_configured_state`);
* DeepSpeed's CPU communication backend JIT-compiles a shared-memory all-reduce kernel (over a minute on a small
  machine) that only tensor-parallel inference uses; `prepare_worker` marks it unavailable so ZeRO uses gloo.

Default configs are `recipes/deepspeed/zero{2,3}.json` (HF "auto" style: batch sizes, clipping and bf16 come from
the GRPO arguments). Wiring in `seekrl.train`: `check_deepspeed` on the driver, `prepare_worker` + `grpo_kwargs` +
`wrap_rollout` in each worker, `gathered_for_save` around the final save.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from pathlib import Path

from seekrl.config import Recipe, RecipeError

log = logging.getLogger(__name__)

CONFIG_DIR = Path("recipes") / "deepspeed"
# DeepSpeed's op name for the CPU shared-memory all-reduce (deepspeed.ops.op_builder.cpu.ShareMemCommBuilder.NAME).
_SHM_OP = "deepspeed_shm_comm"
# The optimizer section added for offload_optimizer: AdamW with the GRPO arguments' hyperparameters ("auto").
OFFLOAD_OPTIMIZER = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}


def default_config_path(stage: int) -> Path:
    """`recipes/deepspeed/zero{stage}.json` of the checkout seekrl is installed from (editable installs), else of
    the current directory (a `seekrl submit` job runs in a copy of the checkout)."""
    name = f"zero{stage}.json"
    candidates = [Path(__file__).resolve().parents[1] / CONFIG_DIR / name, Path.cwd() / CONFIG_DIR / name]
    for path in candidates:
        if path.is_file():
            return path
    raise RecipeError(f"deepspeed.config_file is not set and no {CONFIG_DIR / name} was found (looked in "
                      f"{', '.join(str(p.parent) for p in candidates)}): set deepspeed.config_file to a DeepSpeed "
                      "JSON config")


def _resolve_config_file(config_file: str) -> Path:
    path = Path(config_file).expanduser()
    if not path.is_absolute() and not path.exists():
        # A path written relative to the checkout (recipes/deepspeed/...) works from any directory.
        in_checkout = Path(__file__).resolve().parents[1] / path
        if in_checkout.exists():
            path = in_checkout
    if not path.is_file():
        raise RecipeError(f"deepspeed.config_file {config_file!r} is not a file")
    return path.resolve()


def _load_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RecipeError(f"deepspeed config {path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise RecipeError(f"deepspeed config {path} must be a JSON object, got {type(config).__name__}")
    return config


def deepspeed_config(recipe: Recipe) -> dict | None:
    """The DeepSpeed config for the recipe (None when `deepspeed.stage` is 0): the recipe's `config_file`, else
    `recipes/deepspeed/zero{stage}.json`, with the recipe's offload switches applied. On CPU workers bf16/fp16 are
    off (DeepSpeed's CPU path trains in the model's dtype) and offload sections are never added."""
    ds = recipe.deepspeed
    if not ds.stage:
        return None
    path = _resolve_config_file(ds.config_file) if ds.config_file else default_config_path(ds.stage)
    config = copy.deepcopy(_load_json(path))
    zero = config.setdefault("zero_optimization", {})
    zero.setdefault("stage", ds.stage)
    if recipe.ray.use_gpu:
        if ds.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
            # DeepSpeed refuses ZeRO-Offload with the trainer's torch AdamW (zero_force_ds_cpu_optimizer); with an
            # optimizer section it builds DeepSpeedCPUAdam (a C++ extension compiled on first use), and the
            # trainer keeps its own learning-rate schedule.
            config.setdefault("optimizer", copy.deepcopy(OFFLOAD_OPTIMIZER))
        if ds.offload_param:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    else:
        for key in ("bf16", "fp16"):
            if key in config:
                config[key] = {**config[key], "enabled": False}
    return config


def check_deepspeed(recipe: Recipe) -> None:
    """Raise `RecipeError` for DeepSpeed settings that cannot work; call on the driver before Ray starts.

    A relative `config_file` is made absolute (Ray workers run in their own working directory)."""
    ds = recipe.deepspeed
    if not ds.stage:
        extras = [name for name, on in (("config_file", ds.config_file), ("offload_optimizer", ds.offload_optimizer),
                                        ("offload_param", ds.offload_param)) if on]
        if extras:
            raise RecipeError(f"deepspeed.{extras[0]} is set but deepspeed.stage is 0 (DeepSpeed off): set "
                              "deepspeed.stage to 2 or 3, or remove it")
        return
    if ds.stage not in (2, 3):
        raise RecipeError(f"deepspeed.stage must be 0, 2 or 3, got {ds.stage}")
    if ds.offload_param and ds.stage != 3:
        raise RecipeError(f"deepspeed.offload_param needs deepspeed.stage: 3 (ZeRO-{ds.stage} keeps whole parameters "
                          "on every worker); use offload_optimizer, or stage 3")
    if not recipe.ray.use_gpu and (ds.offload_optimizer or ds.offload_param):
        which = "offload_optimizer" if ds.offload_optimizer else "offload_param"
        raise RecipeError(f"deepspeed.{which} moves state from GPU to CPU memory, but ray.use_gpu is false (CPU "
                          f"workers keep everything in CPU memory already): set deepspeed.{which}: false")
    if ds.config_file:
        ds.config_file = str(_resolve_config_file(ds.config_file))
    config = deepspeed_config(recipe)
    stage = config.get("zero_optimization", {}).get("stage")
    if stage != ds.stage:
        raise RecipeError(f"deepspeed.stage is {ds.stage} but {ds.config_file or default_config_path(ds.stage)} "
                          f"sets zero_optimization.stage {stage!r}: make them agree")


def worker_env_vars(recipe: Recipe) -> dict[str, str]:
    """Environment for Ray workers (e.g. the ray.init runtime_env); `prepare_worker` sets the same in-process."""
    if recipe.deepspeed.stage and not recipe.ray.use_gpu:
        return {"DS_ACCELERATOR": "cpu"}
    return {}


def prepare_worker(recipe: Recipe) -> None:
    """Per-worker DeepSpeed setup; call in the Ray worker after Ray Train set up torch.distributed and before the
    GRPOConfig is built. Does nothing without DeepSpeed or on GPU workers."""
    if not recipe.deepspeed.stage or recipe.ray.use_gpu:
        return
    import torch.distributed as dist

    os.environ.update(worker_env_vars(recipe))
    from deepspeed.accelerator import real_accelerator

    if real_accelerator.ds_accelerator is not None and real_accelerator.ds_accelerator.device_name() != "cpu":
        from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

        real_accelerator.set_accelerator(CPU_Accelerator())
    import deepspeed.ops

    # `__compatible_ops__` is one module-level dict that DeepSpeed reads before building an op (edits persist).
    # Without this every worker JIT-compiles the shared-memory all-reduce that only AutoTP inference uses.
    deepspeed.ops.__compatible_ops__[_SHM_OP] = False

    from accelerate import PartialState
    from accelerate.utils import DistributedType

    # accelerate initialises DeepSpeed with the process-group backend of the device it finds, and finds none on
    # CPU; configure its state with gloo (the group Ray Train created) and let the trainer reuse it.
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        state = PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    world = dist.get_world_size() if dist.is_initialized() else 1
    if state.distributed_type != DistributedType.DEEPSPEED or state.num_processes != world:
        raise RuntimeError(f"accelerate state is {state.distributed_type} with {state.num_processes} processes, "
                           f"expected DeepSpeed with {world}: was accelerate configured before prepare_worker?")
    log.info("DeepSpeed ZeRO-%d on CPU: rank %d of %d over gloo", recipe.deepspeed.stage, state.process_index, world)


def grpo_kwargs(recipe: Recipe, use_cpu: bool) -> dict:
    """GRPOConfig arguments for the recipe's DeepSpeed setting: `deepspeed` and `use_cpu` always, and on CPU workers
    with DeepSpeed also `bf16=False` and the accelerate state configured by `prepare_worker`."""
    config = deepspeed_config(recipe)
    if config is None:
        return {"use_cpu": use_cpu, "deepspeed": None}
    if recipe.ray.use_gpu:
        return {"use_cpu": False, "deepspeed": config}
    # accelerate ignores DeepSpeed when use_cpu is set; DeepSpeed's CPU accelerator does the CPU placement.
    return {"use_cpu": False, "deepspeed": config, "bf16": False, "fp16": False,
            "accelerator_config": {"use_configured_state": True}}


def is_zero3(recipe: Recipe) -> bool:
    return recipe.deepspeed.stage == 3


def wrap_rollout(rollout_func, recipe: Recipe):
    """Under ZeRO-3 run the rollout with whole parameters (TRL's `unwrap_model_for_generation`): each rank generates
    a different number of tokens, and partitioned parameters would need a collective gather per forward pass."""
    if not is_zero3(recipe):
        return rollout_func

    def gathered_rollout(prompts, trainer):
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                         gather_deepspeed3_params=trainer.args.ds3_gather_for_generation):
            return rollout_func(prompts, trainer)

    return gathered_rollout


@contextlib.contextmanager
def gathered_for_save(trainer, recipe: Recipe):
    """Whole parameters for the final `save_pretrained` under ZeRO-3 (no-op otherwise). A collective: enter it on
    every rank, save on rank 0 inside it."""
    if not is_zero3(recipe):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(trainer.model_wrapped.parameters()), modifier_rank=None):
        yield
