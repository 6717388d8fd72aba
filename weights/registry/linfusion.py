"""LinFusion (arXiv 2409.02097) self-attention weights for Stable Diffusion 1.5 / 2.1 / XL, on the Hugging Face hub.

Each hub repository is a diffusers ``ModelMixin`` folder of the official ``LinFusion`` class: ``config.json``
(``_class_name: "LinFusion"``, ``modules_list`` = one ``{module_name, dim_n, heads, projection_mid_dim}`` per
replaced ``attn1``) and ``diffusion_pytorch_model.safetensors`` (fp16) with keys ``{i}.to_q.weight``,
``{i}.to_k.weight``, ``{i}.to_v.weight``, ``{i}.to_out.0.{weight,bias}``, ``{i}.to_q_.{0,1,3}.{weight,bias}``,
``{i}.to_k_.{0,1,3}.{weight,bias}``, ``i`` indexing ``modules_list``. ``linzoo.diffusion.linearize(pipe,
weights=<folder, file or hub id>)`` loads them key-for-key.
"""

from . import OfficialCheckpoint

_SOURCE = "https://github.com/Huage001/LinFusion"
_LICENSE = "apache-2.0 (code repository LICENSE; the hub model cards were not checked)"
_NOTE = (
    "diffusers folder (config.json + diffusion_pytorch_model.safetensors, fp16); the q/k/v/out weights of every "
    "self-attention layer are included, so loading replaces the base model's own. Works for fine-tunes of the "
    "same base (the official code maps {bases} to it)."
)

CHECKPOINTS = [
    OfficialCheckpoint(
        model=f"linfusion_{name}",
        filename="diffusion_pytorch_model.safetensors",
        format="diffusers",
        hf_hub_id=hub_id,
        hf_hub_filename="diffusion_pytorch_model.safetensors",
        url=f"https://huggingface.co/{hub_id}/resolve/main/diffusion_pytorch_model.safetensors",
        license=_LICENSE,
        source_repo=_SOURCE,
        notes=_NOTE.format(bases=", ".join(bases)),
        extra={
            "config_file": "config.json",
            "base_models": bases,
            "num_modules": num_modules,
            "projection_mid_dim": mid_dim,
            "published_size": size,
        },
    )
    for name, hub_id, bases, num_modules, mid_dim, size in (
        (
            "sd15",
            "Yuanshi/LinFusion-1-5",
            ("runwayml/stable-diffusion-v1-5", "SG161222/Realistic_Vision_V4.0_noVAE", "Lykon/dreamshaper-8"),
            16,
            "dim",
            "198 MB",
        ),
        ("sd21", "Yuanshi/LinFusion-2-1", ("stabilityai/stable-diffusion-2-1",), 16, "dim", "198 MB"),
        ("sdxl", "Yuanshi/LinFusion-XL", ("stabilityai/stable-diffusion-xl-base-1.0",), 70, "dim // 16", "871 MB"),
    )
]
