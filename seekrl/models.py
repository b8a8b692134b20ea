"""Loading policies, tokenizers and processors by name or path: the one path every job uses.

Text models load through `AutoModelForCausalLM`, vision-language models (a config with a `vision_config`)
through `AutoModelForImageTextToText`, and their pre-processing through `AutoTokenizer` / `AutoProcessor`.

One wrinkle: transformers 5 builds the video processor of every Qwen-VL processor, and that needs torchvision,
which seekrl does not require (its CPU wheels do not match torch 2.13 here). When `AutoProcessor` fails for that
reason alone, `load_processor` builds the same processor class from the checkpoint's own tokenizer and its
(PIL) image processor, without a video processor; images work as usual and a video input raises a clear error.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


TINY_MODELS = {"seekrl-tiny-text": "text", "seekrl-tiny-vl": "vl", "seekrl-tiny-searcher": "searcher"}


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """A Hub id or directory as given; `seekrl-tiny-text`, `-vl` and `-searcher` become the tiny offline models."""
    name = str(name_or_path)
    if name in TINY_MODELS:
        from seekrl.testing import tiny_model_dir

        return str(tiny_model_dir(TINY_MODELS[name]))
    return name


def is_vision_language(name_or_path: str | os.PathLike) -> bool:
    """True when the checkpoint's config has a vision tower (a VLM such as Qwen2.5-VL)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path))
    return getattr(config, "vision_config", None) is not None


def load_model(name_or_path: str | os.PathLike, dtype: str = "auto", **kwargs):
    """Load a causal LM or a VLM for generation/training, choosing the Auto class from its config."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    path = resolve_model_path(name_or_path)
    auto = AutoModelForImageTextToText if is_vision_language(path) else AutoModelForCausalLM
    return auto.from_pretrained(path, dtype=dtype, **kwargs)


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs):
    """`AutoTokenizer` with left padding (batched generation needs it) and a pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), **kwargs)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _image_only_class(processor_cls):
    """A subclass of a VLM processor class that accepts `video_processor=None`."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return processor_cls.check_argument_for_proper_class(self, argument_name, argument)

    def _process_videos(self, videos, **kwargs):
        raise RuntimeError(
            f"{processor_cls.__name__} was loaded without a video processor (torchvision is not installed); "
            "install torchvision to process videos"
        )

    def save_pretrained(self, save_directory, **kwargs):
        # ProcessorMixin.save_pretrained walks every attribute, the missing video processor included.
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.image_processor.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        (out / "processor_config.json").write_text(json.dumps({"processor_class": processor_cls.__name__}, indent=2))
        return [str(out / "processor_config.json")]

    # Same class name as the real one, which is what a checkpoint's processor_config.json names.
    return type(
        processor_cls.__name__,
        (processor_cls,),
        {
            "check_argument_for_proper_class": check_argument_for_proper_class,
            "_process_videos": _process_videos,
            "save_pretrained": save_pretrained,
            "__module__": __name__,
        },
    )


def image_only_processor(processor_cls, image_processor, tokenizer, chat_template: str | None = None):
    """Build `processor_cls` (e.g. `Qwen2_5_VLProcessor`) with no video processor."""
    return _image_only_class(processor_cls)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=chat_template
    )


def load_processor(name_or_path: str | os.PathLike, **kwargs):
    """`AutoProcessor`, falling back to an image-only processor when only torchvision is missing."""
    import transformers
    from transformers import AutoImageProcessor, AutoProcessor

    name_or_path = resolve_model_path(name_or_path)
    try:
        return AutoProcessor.from_pretrained(name_or_path, **kwargs)
    except ImportError as err:
        if "torchvision" not in str(err).lower():
            raise
        reason = str(err).strip().splitlines()[0]
    path = Path(name_or_path)
    config_file = path / "processor_config.json"
    if not config_file.exists():
        raise FileNotFoundError(
            f"{name_or_path}: AutoProcessor needs torchvision ({reason}) and there is no local "
            "processor_config.json to build an image-only processor from; install torchvision"
        )
    processor_class = json.loads(config_file.read_text()).get("processor_class")
    processor_cls = getattr(transformers, processor_class or "", None)
    if processor_cls is None:
        raise ValueError(f"{config_file}: unknown processor_class {processor_class!r}")
    log.info("torchvision missing: loading %s for images only", processor_class)
    image_processor = AutoImageProcessor.from_pretrained(name_or_path, backend="pil")
    tokenizer = load_tokenizer(name_or_path)
    return image_only_processor(processor_cls, image_processor, tokenizer, tokenizer.chat_template)
