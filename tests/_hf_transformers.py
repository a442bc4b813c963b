"""Loads a MiniDeepSeek export with Hugging Face transformers and reports what it computes.

Used by tests/hf_export_test.ts (not run by hand): reads a JSON request on stdin, prints one JSON
object on stdout.

request: {"dir": DIR, "sequences": [[ids...]...], "messages": [...], "tools": [...] | null,
          "max_new_tokens": N, "save_to": DIR | null}
reply:   {"model_class", "config": {...}, "unexpected": [...], "missing": [...],
          "logits": [[[...V] per position] per sequence],
          "chat_ids": [...], "generated": [...], "text": "...",
          "saved": [file names] | null}
"""

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402


def main() -> None:
    req = json.load(sys.stdin)
    path = req["dir"]
    torch.manual_seed(0)
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    tok = AutoTokenizer.from_pretrained(path)
    logits = []
    with torch.no_grad():
        for ids in req["sequences"]:
            out = model(torch.tensor([ids], dtype=torch.long))
            logits.append(out.logits[0].tolist())
    chat_ids = tok.apply_chat_template(
        req["messages"], tools=req.get("tools"), add_generation_prompt=True, tokenize=True,
        return_dict=False,
    )
    if isinstance(chat_ids, dict) or hasattr(chat_ids, "input_ids"):
        chat_ids = chat_ids["input_ids"]
    chat_ids = list(chat_ids)
    gen_cfg = GenerationConfig.from_pretrained(path)
    with torch.no_grad():
        gen = model.generate(
            torch.tensor([chat_ids], dtype=torch.long),
            attention_mask=torch.ones(1, len(chat_ids), dtype=torch.long),
            max_new_tokens=req["max_new_tokens"],
            do_sample=False,
        )
    new = gen[0, len(chat_ids):].tolist()
    saved = None
    if req.get("save_to"):
        model.save_pretrained(req["save_to"])
        saved = sorted(os.listdir(req["save_to"]))
    json.dump(
        {
            "model_class": type(model).__name__,
            "config": {
                "routed_scaling_factor": model.config.routed_scaling_factor,
                "rope_parameters": model.config.rope_parameters,
                "eos_token_id": model.config.eos_token_id,
            },
            "generation_eos": gen_cfg.eos_token_id,
            "unexpected": sorted(info.get("unexpected_keys", [])),
            "missing": sorted(info.get("missing_keys", [])),
            "mismatched": [str(m) for m in info.get("mismatched_keys", [])],
            "logits": logits,
            "chat_ids": chat_ids,
            "generated": new,
            "text": tok.decode(new, skip_special_tokens=False),
            "saved": saved,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
