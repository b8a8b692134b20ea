"""The Kinetics cost model (arXiv 2506.05333): eFLOPs = C_comp + I * C_mem, and a planner built on it.

I is the hardware's arithmetic intensity, peak FLOP/s / memory bandwidth. Costs are those of decoding (the
paper's model: prefill is not counted) and follow the paper's code (Infini-AI-Lab/Kinetics
`cost_model/utils.py`) term for term, with one addition marked below; memory is counted in elements as there. With P parameters, d = head_dim x
layers, prompt length L_in, generated length L_out and N samples of one prompt:

    dense   compute  (2 P L_out + 2 (2 L_in + L_out) L_out H_q d) N
            memory   2 (2 L_in + N L_out) L_out H_kv d            (the prompt's KV is read once, shared by the N)
    block top-k, B = local + block_size x topk:
            kv       B L_out - 0.5 max(0, B - L_in)^2              (+ 0.5 max(0, B - L_in - L_out)^2: 0 unless the
                                                                    context stays below B for the whole generation)
            compute  (2 P L_out + 4 kv H_q d + ((2 L_in + L_out) // block_size) L_out H_q d) N
            memory   4 kv H_kv d N + ((2 L_in + N L_out) // block_size) L_out H_kv d

Multi-turn trajectories (`trajectory_eflops`) sum these over turns with the growing context: in turn t the
prompt is still shared by the N samples, the earlier turns' tokens (generated and retrieved) are each sample's own.

>>> cfg = {"num_parameters": 1e9, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
...        "head_dim": 8}
>>> dense_eflops(cfg, prompt_len=100, gen_len=10, num_samples=1, hardware="b200").compute
20000268800.0
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HardwareProfile:
    """Peak dense 16-bit FLOP/s and memory bandwidth (bytes/s); `intensity` is the I of the cost model."""

    name: str
    peak_flops: float
    bandwidth: float
    intensity_override: float | None = None

    @property
    def intensity(self) -> float:
        return self.intensity_override if self.intensity_override is not None else self.peak_flops / self.bandwidth


# Vendor datasheets (SXM parts, dense BF16 tensor-core FLOP/s without sparsity, HBM bandwidth).
# B200 keeps the paper's I = 562.5 (its Table: 4.5 PFLOP/s FP8 dense / 8 TB/s).
HARDWARE: dict[str, HardwareProfile] = {
    "b200": HardwareProfile("b200", 4.5e15, 8.0e12, intensity_override=562.5),
    "h100": HardwareProfile("h100", 989.4e12, 3.35e12),
    "h200": HardwareProfile("h200", 989.4e12, 4.8e12),
    "a100": HardwareProfile("a100", 312e12, 2.039e12),
}


@functools.lru_cache(maxsize=1)
def measure_cpu_profile(size: int = 1024, copy_mb: int = 256, repeats: int = 3) -> HardwareProfile:
    """Measure this machine: fp32 matmul FLOP/s and memory copy bandwidth (read + write bytes), best of `repeats`."""
    import time

    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    src = torch.empty(copy_mb * 2**20 // 4)
    dst = torch.empty_like(src)
    torch.mm(a, b)
    dst.copy_(src)
    best_mm = best_copy = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best_mm = min(best_mm, time.perf_counter() - t0)
        t0 = time.perf_counter()
        dst.copy_(src)
        best_copy = min(best_copy, time.perf_counter() - t0)
    return HardwareProfile("cpu", 2 * size**3 / best_mm, 2 * src.numel() * 4 / best_copy)


def get_hardware(hardware: str | HardwareProfile) -> HardwareProfile:
    """A profile by name (b200, h100, h200, a100, cpu: measured once per process) or the profile itself."""
    if isinstance(hardware, HardwareProfile):
        return hardware
    if hardware == "cpu":
        return measure_cpu_profile()
    if hardware not in HARDWARE:
        raise ValueError(f"unknown hardware profile {hardware!r}; choose one of {sorted([*HARDWARE, 'cpu'])}")
    return HARDWARE[hardware]


@dataclass(frozen=True)
class ModelShape:
    """What the cost model needs from a model: parameters P, layers, query heads, KV heads, head dim."""

    num_parameters: float
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def d(self) -> int:
        """The paper's d: head_dim x layers (attention cost summed over layers)."""
        return self.head_dim * self.num_layers


def count_parameters(cfg: dict[str, Any]) -> int:
    """Parameters of a Llama/Qwen-style decoder from its config, counted as `model.num_parameters()` does.

    Embedding (+ separate LM head unless tied), per layer q/k/v/o projections (+ q/k/v biases when
    `attention_bias` or model_type qwen2), gated MLP (3 matrices), two RMSNorms (+ q/k norms for qwen3), final norm.
    """
    hidden, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or hidden // heads
    vocab, inter = cfg["vocab_size"], cfg["intermediate_size"]
    model_type = cfg.get("model_type", "")
    qkv_bias = cfg.get("attention_bias", model_type == "qwen2")
    q, kv = heads * head_dim, kv_heads * head_dim
    attn = hidden * (q + 2 * kv) + q * hidden + (q + 2 * kv if qkv_bias else 0)
    qk_norm = 2 * head_dim if model_type == "qwen3" else 0
    per_layer = attn + 3 * hidden * inter + 2 * hidden + qk_norm
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return embed + layers * per_layer + hidden


def model_shape(config: Any) -> ModelShape:
    """A transformers config (text config of multimodal ones) or a dict with the same keys."""
    if not isinstance(config, dict):
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        config = text.to_dict()
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    params = config["num_parameters"] if "num_parameters" in config else count_parameters(config)
    return ModelShape(
        num_parameters=params,
        num_layers=config["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=head_dim,
    )


@dataclass(frozen=True)
class Cost:
    """Compute (FLOPs) and memory traffic (elements); `eflops` = compute + intensity * memory."""

    compute: float
    memory: float
    intensity: float

    @property
    def eflops(self) -> float:
        return self.compute + self.intensity * self.memory

    def __float__(self) -> float:
        return self.eflops

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.compute + other.compute, self.memory + other.memory, self.intensity)


@dataclass(frozen=True)
class BlockTopK:
    """A block top-k attention budget: B = local + block_size x topk tokens attended per decode step."""

    block_size: int
    topk: int
    local: int = 0

    @property
    def budget(self) -> int:
        return self.local + self.block_size * self.topk


def _dense(m: ModelShape, shared: int, private: int, gen: int, n: int, intensity: float) -> Cost:
    # `shared` context tokens are read once for the N samples, `private` ones (earlier turns) once per sample.
    ctx = shared + private
    compute = (2 * m.num_parameters * gen + 2 * (2 * ctx + gen) * gen * m.num_heads * m.d) * n
    memory = 2 * (2 * shared + n * (2 * private + gen)) * gen * m.num_kv_heads * m.d
    return Cost(float(compute), float(memory), intensity)


def _block_topk(m: ModelShape, shared: int, private: int, gen: int, n: int, sparse: BlockTopK,
                intensity: float) -> Cost:
    ctx = shared + private
    b = sparse.budget
    # Tokens attended summed over the generation: B per step, less the steps where the context was shorter than B.
    # The paper's formula assumes the context reaches B during the generation (gen >= B - ctx); the last term,
    # zero in that case, keeps it the attended count (and positive) when it does not.
    kv = b * gen - 0.5 * max(0, b - ctx) ** 2 + 0.5 * max(0, b - ctx - gen) ** 2
    # Scoring the blocks: one dot product per block mean (and query head) per step.
    score_compute = ((2 * ctx + gen) // sparse.block_size) * gen * m.num_heads * m.d
    compute = (2 * m.num_parameters * gen + 4 * kv * m.num_heads * m.d + score_compute) * n
    score_memory = ((2 * shared + n * (2 * private + gen)) // sparse.block_size) * gen * m.num_kv_heads * m.d
    memory = 4 * kv * m.num_kv_heads * m.d * n + score_memory
    return Cost(float(compute), float(memory), intensity)


def dense_eflops(config: Any, prompt_len: int, gen_len: int, num_samples: int = 1,
                 hardware: str | HardwareProfile = "h200") -> Cost:
    """Cost of N dense samples of `gen_len` tokens after a shared prompt of `prompt_len` tokens."""
    return _dense(model_shape(config), prompt_len, 0, gen_len, num_samples, get_hardware(hardware).intensity)


def block_topk_eflops(config: Any, prompt_len: int, gen_len: int, num_samples: int = 1,
                      hardware: str | HardwareProfile = "h200", block_size: int = 64, topk: int = 16,
                      local: int = 0) -> Cost:
    """Cost of N block top-k samples (budget local + block_size x topk), block scoring included."""
    sparse = BlockTopK(block_size, topk, local)
    return _block_topk(model_shape(config), prompt_len, 0, gen_len, num_samples, sparse,
                       get_hardware(hardware).intensity)


def trajectory_eflops(config: Any, prompt_len: int, turns: list[tuple[int, int]], num_samples: int = 1,
                      hardware: str | HardwareProfile = "h200", sparse: BlockTopK | None = None) -> Cost:
    """Cost of N multi-turn trajectories: `turns` is [(generated, observation tokens)], summed with the context
    growing by both after each turn. Observation tokens are prefilled, so only their KV reads count."""
    m, intensity = model_shape(config), get_hardware(hardware).intensity
    total = Cost(0.0, 0.0, intensity)
    private = 0
    for generated, observation in turns:
        if sparse is None:
            total = total + _dense(m, prompt_len, private, generated, num_samples, intensity)
        else:
            total = total + _block_topk(m, prompt_len, private, generated, num_samples, sparse, intensity)
        private += generated + observation
    return total


@dataclass(frozen=True)
class Plan:
    """The planner's choice and its cost per prompt (all N samples), with the dense cost of the same shape."""

    block_size: int
    topk: int
    local: int
    max_new_tokens: int
    group_size: int
    eflops: float
    dense_eflops: float

    @property
    def budget(self) -> int:
        return self.local + self.block_size * self.topk


def plan_from_section(kinetics: Any, config: Any, prompt_len: int) -> Plan:
    """The planner with a recipe's `kinetics` section (seekrl.config.KineticsSection): its budget, candidates,
    local window and hardware."""
    if kinetics.eflops_budget is None:
        raise ValueError("kinetics.eflops_budget is not set: the planner needs a per-prompt eFLOPs budget")
    return plan(config, prompt_len, kinetics.eflops_budget, block_sizes=kinetics.planner_block_sizes,
                topks=kinetics.planner_topks, max_new_tokens=kinetics.planner_max_new_tokens,
                group_sizes=kinetics.planner_group_sizes, local=kinetics.local, hardware=kinetics.hardware)


def plan(config: Any, prompt_len: int, eflops_budget: float, *, block_sizes: list[int], topks: list[int],
         max_new_tokens: list[int], group_sizes: list[int], local: int = 0,
         hardware: str | HardwareProfile = "h200") -> Plan:
    """Choose block size x top-k, max new tokens and group size within `eflops_budget` per prompt.

    Maximises generated tokens x samples; ties go to the larger attention budget (more accurate), then to
    the cheaper plan. Raises ValueError naming the cheapest candidate's cost when nothing fits.
    """
    m, intensity = model_shape(config), get_hardware(hardware).intensity
    best, best_key, cheapest = None, None, float("inf")
    for bs, k, gen, n in itertools.product(block_sizes, topks, max_new_tokens, group_sizes):
        sparse = BlockTopK(bs, k, local)
        cost = _block_topk(m, prompt_len, 0, gen, n, sparse, intensity).eflops
        cheapest = min(cheapest, cost)
        if cost > eflops_budget:
            continue
        key = (gen * n, sparse.budget, -cost)
        if best_key is None or key > best_key:
            dense = _dense(m, prompt_len, 0, gen, n, intensity).eflops
            best, best_key = Plan(bs, k, local, gen, n, cost, dense), key
    if best is None:
        raise ValueError(f"no candidate fits an eFLOPs budget of {eflops_budget:.3e} per prompt; the cheapest "
                         f"needs {cheapest:.3e}: raise kinetics.eflops_budget or add smaller candidates")
    return best


# Model configs for the cost tables, from the models' config.json on the Hugging Face Hub (Qwen/Qwen3-0.6B ...
# Qwen/Qwen3-32B, Qwen/Qwen2.5-3B-Instruct). P is computed from them (count_parameters); the Qwen3 counts match
# the model cards' non-embedding figures (0.44B, 1.4B, 3.6B, 6.95B, 13.2B, 31.2B).
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen3-0.6B": dict(model_type="qwen3", num_hidden_layers=28, hidden_size=1024, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
                       tie_word_embeddings=True),
    "Qwen3-1.7B": dict(model_type="qwen3", num_hidden_layers=28, hidden_size=2048, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, intermediate_size=6144, vocab_size=151936,
                       tie_word_embeddings=True),
    "Qwen3-4B": dict(model_type="qwen3", num_hidden_layers=36, hidden_size=2560, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, intermediate_size=9728, vocab_size=151936,
                     tie_word_embeddings=True),
    "Qwen3-8B": dict(model_type="qwen3", num_hidden_layers=36, hidden_size=4096, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, intermediate_size=12288, vocab_size=151936,
                     tie_word_embeddings=False),
    "Qwen3-14B": dict(model_type="qwen3", num_hidden_layers=40, hidden_size=5120, num_attention_heads=40,
                      num_key_value_heads=8, head_dim=128, intermediate_size=17408, vocab_size=151936,
                      tie_word_embeddings=False),
    "Qwen3-32B": dict(model_type="qwen3", num_hidden_layers=64, hidden_size=5120, num_attention_heads=64,
                      num_key_value_heads=8, head_dim=128, intermediate_size=25600, vocab_size=151936,
                      tie_word_embeddings=False),
    "Qwen2.5-3B": dict(model_type="qwen2", num_hidden_layers=36, hidden_size=2048, num_attention_heads=16,
                       num_key_value_heads=2, head_dim=128, intermediate_size=11008, vocab_size=151936,
                       tie_word_embeddings=True),
}
