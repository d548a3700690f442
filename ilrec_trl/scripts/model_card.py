"""The model card `ilrec-train` writes next to each trained model: TRL's card (its template, versions and citation
block) with the ILRec citation, the base model, the dataset, the results in `model-index` form, the results table
and the full resolved configuration of the run."""

import json
import os
from pathlib import Path

from huggingface_hub import EvalResult

from ..atomic import atomic_path

ILREC_PAPER = {
    "title": "Improving LLM-based Recommendation with Self-Hard Negatives from Intermediate Layers",
    "id": "2602.17410",
    "citation": """\
@article{li2026ilrec,
    title   = {{Improving LLM-based Recommendation with Self-Hard Negatives from Intermediate Layers}},
    author  = {Li and Zheng and Wang and Zhang and Wang and Chen and Zhao and Wen},
    journal = {arXiv preprint arXiv:2602.17410},
    year    = {2026}
}""",
}
METRIC_PREFIXES = ("hit@", "ndcg@", "mrr", "coverage@")


def model_card(result: dict, config: dict, table: str, dataset_name: str, base_model: str | None,
               hub_model_id: str | None, model_name: str):
    """A `huggingface_hub.ModelCard` for one trained arm (`result` is its row of results.json)."""
    from trl.trainer.utils import generate_model_card

    method = result["method"]
    if base_model is not None and os.path.isdir(base_model):
        base_model = None  # a local folder is not a Hub id (TRL's card does the same)
    card = generate_model_card(
        base_model=base_model, model_name=model_name, hub_model_id=hub_model_id or model_name,
        dataset_name=dataset_name, tags=["trl", "ilrec", "recommendation", method], wandb_url=None, trackio_url=None,
        trainer_name="ILRec" if method == "ilrec" else "SFT",
        trainer_citation=ILREC_PAPER["citation"] if method == "ilrec" else None,
        paper_title=ILREC_PAPER["title"] if method == "ilrec" else None,
        paper_id=ILREC_PAPER["id"] if method == "ilrec" else None,
    )
    split = config["script"].get("eval_split", "test")
    card.data.eval_results = [
        EvalResult(task_type="text-generation", task_name="Next-item recommendation (constrained beam search)",
                   dataset_type=dataset_name, dataset_name=dataset_name, dataset_split=split,
                   metric_type=key.replace("@", "_at_"), metric_name=key, metric_value=float(value))
        for key, value in result.items() if key.startswith(METRIC_PREFIXES)
    ] or None
    card.data.model_name = model_name
    text = card.content.split("---", 2)[2]
    # TRL's template is written for chat models: say what this model is and how to get recommendations from it
    head, rest = text.split("## Quick start", 1)
    how = "ILRec" if method == "ilrec" else "plain SFT"
    origin = (f"[{base_model}](https://huggingface.co/{base_model}) fine-tuned" if base_model
              else "A tiny Llama trained from scratch")
    head = (f"\n# Model Card for {model_name}\n\n{origin} on `{dataset_name}` with {how} as a next-item recommender "
            f"([ilrec-trl](https://arxiv.org/abs/2602.17410) on [TRL](https://github.com/huggingface/trl)): given a "
            f"prompt listing a user's history it generates the identifier of the next item. The folder carries its "
            f"item catalogue (`catalog.json`).\n\n")
    usage = ("## Quick start\n\n```python\nfrom ilrec_trl import Recommender\n\n"
             "rec = Recommender.from_pretrained(PATH_OR_HUB_ID)\n"
             "rec.recommend([[12, 7, 3]], k=10)   # histories of item ids, oldest first -> [(item_id, score), ...]\n"
             "```\n\n")
    text = head + usage + "## Training procedure" + rest.split("## Training procedure", 1)[1]
    extra = (f"\n## Recommendation results ({split} split)\n\n{table}\n\n"
             f"## Configuration\n\nThe full resolved configuration of this run (`ilrec-train`):\n\n"
             f"```json\n{json.dumps(config, indent=2, default=str)}\n```\n")
    card.content = f"---\n{card.data.to_yaml()}\n---{text}{extra}"
    return card


def write_model_card(directory: Path, **kwargs) -> Path:
    """Write [`model_card`] as `directory/README.md` (atomically: a killed run leaves the old card or the new)."""
    path = Path(directory) / "README.md"
    card = model_card(**kwargs)
    with atomic_path(path) as tmp:
        card.save(str(tmp))
    return path
