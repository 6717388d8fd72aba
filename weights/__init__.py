"""Official checkpoints: a registry of where they live, a safe loader, and converters to safetensors."""

from .convert import StateDictMismatchError, check_state_dict, convert_checkpoint
from .loader import CheckpointLoadError, extract_state_dict, load_checkpoint_file, load_state_dict_file, sha256_file
from .registry import OfficialCheckpoint, get_checkpoint, list_checkpoints, pretrained_source
from .tf_checkpoint import TFCheckpointError, TFCheckpointReader, load_tf_checkpoint

__all__ = [
    "CheckpointLoadError",
    "OfficialCheckpoint",
    "StateDictMismatchError",
    "TFCheckpointError",
    "TFCheckpointReader",
    "check_state_dict",
    "convert_checkpoint",
    "extract_state_dict",
    "get_checkpoint",
    "list_checkpoints",
    "load_checkpoint_file",
    "load_state_dict_file",
    "load_tf_checkpoint",
    "pretrained_source",
    "sha256_file",
]
