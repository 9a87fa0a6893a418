#!/usr/bin/env python3
"""anneal-train refuses bad jobs with one clear line naming what and where, and a non-zero exit (a table).

The job-spec validator has its own table (tests/unit/jobspec); these are the errors only the trainer can see:
files, models, adapters, datasets, layouts and checkpoints.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main():
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, f"{ROOT}/scripts/make_tokenizer.py", "--out", f"{tmp}/tok", "--vocab-size", "300"],
                       check=True, capture_output=True)
        subprocess.run([binary, "model", "init", "--arch", "llama", "--preset", "tiny", "--tokenizer", f"{tmp}/tok",
                        "--out", f"{tmp}/m"], check=True, capture_output=True)
        os.makedirs(f"{tmp}/bad-model")
        json.dump({"model_type": "gpt2", "hidden_size": 8}, open(f"{tmp}/bad-model/config.json", "w"))
        shutil.copytree(f"{tmp}/m", f"{tmp}/trunc")
        st = f"{tmp}/trunc/model.safetensors"
        os.truncate(st, os.path.getsize(st) - 1000)
        os.makedirs(f"{tmp}/bad-adapter")
        json.dump({"peft_type": "PREFIX_TUNING"}, open(f"{tmp}/bad-adapter/adapter_config.json", "w"))
        # Stage rm: a ranking dataset, a model whose value head belongs to another hidden size, and one whose
        # config asks for an impossible value-head dropout.
        os.makedirs(f"{tmp}/rdata")
        json.dump([{"instruction": "hi", "chosen": "hello", "rejected": "go"}], open(f"{tmp}/rdata/pairs.json", "w"))
        json.dump({"pairs": {"file_name": "pairs.json", "ranking": True,
                             "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}},
                  open(f"{tmp}/rdata/dataset_info.json", "w"))
        shutil.copytree(f"{tmp}/m", f"{tmp}/m-vhead")
        from safetensors.numpy import save_file
        import numpy as np
        save_file({"v_head.summary.weight": np.zeros((1, 7), np.float32), "v_head.summary.bias": np.zeros(1, np.float32)},
                  f"{tmp}/m-vhead/value_head.safetensors")
        shutil.copytree(f"{tmp}/m", f"{tmp}/m-dropout")
        cfg = json.load(open(f"{tmp}/m-dropout/config.json"))
        cfg["summary_dropout_prob"] = 2
        json.dump(cfg, open(f"{tmp}/m-dropout/config.json", "w"))
        rm = ["stage: rm", "dataset: pairs", f"dataset_dir: {tmp}/rdata"]
        base = [f"model_name_or_path: {tmp}/m", "dataset: demo_train", f"dataset_dir: {ROOT}/examples/data",
                "template: qwen", "cutoff_len: 64", f"output_dir: {tmp}/out", "max_steps: 2", "save_strategy: \"no\"",
                "overwrite_output_dir: true", f"tokenized_cache_dir: {tmp}/cache"]
        cases = [
            # (name, replaced/added lines, extra args, exit code, expected substring)
            ("missing model", [f"model_name_or_path: {tmp}/nope"], [], 1, f"model config not found: {tmp}/nope/config.json"),
            ("unsupported model type", [f"model_name_or_path: {tmp}/bad-model"], [], 1,
             "key 'model_type': unsupported model type 'gpt2' (supported: llama, qwen2, mistral, qwen3, qwen3_moe, deepseek_v2, "
             "deepseek_v3)"),
            ("unknown lora target", ["lora_target: q_proj,lm_head"], [], 2, "key 'lora_target' at"),
            ("truncated weights", [f"model_name_or_path: {tmp}/trunc"], [], 1,
             "truncated or trailing garbage"),
            ("missing adapter", [f"adapter_name_or_path: {tmp}/no-adapter"], [], 1, f"{tmp}/no-adapter/adapter_config.json"),
            ("non-LoRA adapter", [f"adapter_name_or_path: {tmp}/bad-adapter"], [], 1,
             "peft_type 'PREFIX_TUNING' is not supported (LORA)"),
            ("unknown dataset", ["dataset: no_such_dataset"], [], 1, "no_such_dataset"),
            ("unknown template", ["template: nonsense"], [], 1, "nonsense"),
            ("layout does not divide the launcher's world", ["tensor_model_parallel_size: 3"], [], 1,
             "world size 1 is not divisible by tensor 3 x pipeline 1"),
            ("layout does not divide the spec's world", ["tensor_model_parallel_size: 3", "gpus_per_node: 2"], [], 2,
             "= 3 does not divide the world size 2 (nodes 1 x gpus_per_node 2)"),
            ("resource keys disagree with the launcher", ["gpus_per_node: 2"], [], 1,
             "the spec asks for nodes 1 x gpus_per_node 2 = 2 ranks but the launcher started one process "
             "(no WORLD_SIZE)"),
            ("freeze layers beyond the model", ["finetuning_type: freeze", "freeze_trainable_layers: 9"], [], 1,
             "freeze_trainable_layers: 9 is not within 1..2"),
            ("resume without checkpoints", ["resume_from_checkpoint: latest"], [], 1,
             f"resume_from_checkpoint: latest: no checkpoint in {tmp}/out"),
            ("diverging run (NaN loss)", ["finetuning_type: full", "learning_rate: 1.0e+20", "max_grad_norm: 0",
                                          "max_steps: 10"], [], 1,
             "step 2: the loss is NaN (lower the learning rate, or check the data)"),
            ("stage rm on a plain dataset", ["stage: rm"], [], 1, "dataset demo_train: is not a ranking dataset"),
            ("stage rm: another model's value head", rm + [f"model_name_or_path: {tmp}/m-vhead"], [], 1,
             f"{tmp}/m-vhead/value_head.safetensors: 'v_head.summary.weight' has shape [1, 7], this model's hidden size"),
            ("stage rm: value-head dropout 2", rm + [f"model_name_or_path: {tmp}/m-dropout"], [], 1,
             "summary_dropout_prob 2 is not a probability in [0, 1)"),
            ("missing config file", None, [], 2, f"{tmp}/absent.yaml"),
            ("bad override", [], ["--set", "learning_rate=fast"], 2, "learning_rate"),
            ("unknown retention owner", [], [], 1,
             "environment ANNEAL_CHECKPOINT_RETENTION='agent' is not one of: coordinator", {"ANNEAL_CHECKPOINT_RETENTION": "agent"}),
        ]
        failures = 0
        for name, lines, extra, code, expected, *env_extra in cases:
            env = dict(os.environ, **(env_extra[0] if env_extra else {}))
            path = f"{tmp}/job.yaml"
            if lines is None:
                path = f"{tmp}/absent.yaml"
            else:
                keys = {l.split(":")[0] for l in lines}
                with open(path, "w") as f:
                    f.write("\n".join([l for l in base if l.split(":")[0] not in keys] + lines) + "\n")
            p = subprocess.run([binary, "train", "--config", path, *extra], capture_output=True, text=True, timeout=120,
                               env=env)
            last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
            ok = p.returncode == code and expected in p.stderr and last.startswith("error: ")
            print(f"{'ok  ' if ok else 'FAIL'} {name:<32} exit {p.returncode} | {last[:150]}")
            if not ok:
                failures += 1
                print(f"     expected exit {code} and '{expected}' in stderr:\n{p.stderr[-1500:]}")
        print(f"{len(cases) - failures} passed, {failures} failed")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
