#!/usr/bin/env python3
"""End to end with real processes: a pipeline train -> eval -> promote on a local cluster (`anneal up`, one agent
with 2 CPU slots, real anneal-train ranks), run twice.

  promote: run 1 trains a LoRA adapter, evaluates it on demo_eval and promotes it (the model's first version);
           run 2, with a learning rate too small to learn anything (so a worse eval_loss), is registered as a
           candidate and NOT promoted; run 1's production files are intact (same sha256) after run 2 and its
           checkpoint retention; each run wrote its own output directory.
  schedule: the same loop fired from schedules by `anneal schedule trigger` (fire now): the first schedule's run is
           promoted; a second schedule with --set train.learning_rate=1e-9 fires a run that is kept as a
           candidate; production stays v1 with its files intact.
  export:  train -> export (a LLaMA-Factory export config: export_dir, no kind) -> eval of the merged model and
           eval of the adapter -> promote with train_step: the export step. The export job ran as an ordinary
           job (anneal-train export --config on the agent) and wrote an HF model (config, safetensors, tokenizer);
           the merged model's eval_loss equals the adapter's (rel 1e-4); the promoted version is the merged
           model (artifact MERGED, its path the export's directory) with the train step's datasets.
  clean:   clean (kind: clean, on a dataset of 40 distinct rows plus 10 planted exact duplicates) -> train on the
           cleaned dataset (dataset_dir: ${steps.clean.output_dir}) -> eval -> promote. The clean job wrote the
           cleaned rows, a dataset_info.json naming them and its report; its job record carries the counts (kept 40,
           dropped_exact_duplicate 10) and `anneal show` prints them; the train step trained on the 40 cleaned
           rows (1 epoch of batch 4: total_steps 10, not the 13 the 50 raw rows would give).

--bindir holds anneal and anneal-coordinator (this build); anneal-agent and anneal-train are taken from
--bindir when there, else from $ANNEAL_TRAINER_BINDIR (e.g. /work/main/build/bin: a build with the trainer).
"""
import hashlib
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import ROOT, make_tokenizer, run, run_cases  # noqa: E402
import e2e_test  # noqa: E402


def merged_bindir(bindir, tmp):
    """One directory with this build's CLI and coordinator and a trainer build's agent and trainer."""
    trainer_dir = bindir if os.path.exists(os.path.join(bindir, "anneal-train")) else \
        os.environ.get("ANNEAL_TRAINER_BINDIR", "")
    assert os.path.exists(os.path.join(trainer_dir, "anneal-train")), \
        f"no anneal-train in {bindir}: set ANNEAL_TRAINER_BINDIR to a build with the trainer"
    out = f"{tmp}/bin"
    os.makedirs(out)
    for name, where in (("anneal", bindir), ("anneal-coordinator", bindir), ("anneal-agent", trainer_dir),
                        ("anneal-data", trainer_dir), ("anneal-train", trainer_dir)):
        src = os.path.realpath(os.path.join(where, name))
        if not os.path.exists(src):
            continue
        if name == "anneal":
            shutil.copy(src, out)  # `anneal up` starts the daemons next to its own (resolved) path: this directory
        else:
            os.symlink(src, os.path.join(out, name))  # the agent runs the anneal-train next to its resolved path
    return out


class Cluster(e2e_test.Cluster):
    """e2e_test's local cluster with one agent of 2 CPU slots, and a wait for a pipeline run to end."""

    def __init__(self, bindir, home):
        super().__init__(bindir, home, agents=1)

    def wait_run(self, run_id, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            shown = json.loads(self.anneal("--json", "pipeline", "show", run_id).stdout)
            if shown["state"] != "PIPELINE_RUNNING":
                return shown
            time.sleep(1)
        raise AssertionError(f"pipeline run {run_id} still running after {timeout}s:\n"
                             f"{self.anneal('pipeline', 'show', run_id).stdout}")


def job_keys(tmp, dataset_dir=None):
    """The keys every train and eval job of these pipelines shares (indented as a step's job mapping)."""
    keys = [f"model_name_or_path: {tmp}/base"] + ([f"dataset_dir: {dataset_dir}"] if dataset_dir else []) + [
        "template: qwen", "cutoff_len: 96", f"tokenized_cache_dir: {tmp}/cache", "device: cpu", "nodes: 1",
        "gpus_per_node: 1"]
    return "\n      ".join(keys)


def pipeline_yaml(tmp):
    path = f"{tmp}/pipeline.yaml"
    common = job_keys(tmp, dataset_dir=f"{ROOT}/examples/data")
    with open(path, "w") as f:
        f.write(f"""name: e2e-retrain
steps:
  - name: train
    job:
      {common}
      finetuning_type: lora
      lora_rank: 8
      lora_target: all
      dataset: demo_train
      max_samples: 32
      output_dir: {tmp}/train
      per_device_train_batch_size: 4
      learning_rate: 5.0e-3
      max_steps: 12
      logging_steps: 1
      save_steps: 4
      save_total_limit: 1
  - name: eval
    needs: [train]
    job:
      kind: eval
      {common}
      adapter_name_or_path: ${{steps.train.output_dir}}
      dataset: demo_eval
      output_dir: ${{steps.train.output_dir}}/eval
  - name: promote
    needs: [eval]
    promote: {{model: demo-bot, train_step: train, eval_step: eval, metric: eval_loss, mode: min, margin: 0.0}}
""")
    return path


def eval_step(name, needs, model, adapter, output_dir, tmp):
    """A pipeline step evaluating `model` (with `adapter` when given) on demo_eval."""
    adapter_line = f"\n      adapter_name_or_path: {adapter}" if adapter else ""
    return f"""  - name: {name}
    needs: [{needs}]
    job:
      kind: eval
      model_name_or_path: {model}{adapter_line}
      dataset_dir: {ROOT}/examples/data
      template: qwen
      cutoff_len: 96
      tokenized_cache_dir: {tmp}/cache
      device: cpu
      dataset: demo_eval
      output_dir: {output_dir}
"""


def export_pipeline_yaml(tmp):
    """train -> merge (LLaMA-Factory's export keys) -> eval of the merged model and of the adapter -> promote."""
    path = f"{tmp}/export-pipeline.yaml"
    evals = eval_step("eval_merged", "merge", "${steps.merge.output_dir}", "", f"{tmp}/eval-merged", tmp) + \
        eval_step("eval_adapter", "train", f"{tmp}/base", "${steps.train.output_dir}", f"{tmp}/eval-adapter", tmp)
    with open(path, "w") as f:
        f.write(open(pipeline_yaml(tmp)).read().split("  - name: eval")[0])
        f.write(f"""  - name: merge
    needs: [train]
    job:
      model_name_or_path: {tmp}/base
      adapter_name_or_path: ${{steps.train.output_dir}}
      template: qwen
      export_dir: {tmp}/merged
      export_size: 1
      export_device: cpu
      export_legacy_format: false
{evals}  - name: promote
    needs: [eval_merged, eval_adapter]
    promote: {{model: demo-merged, train_step: merge, eval_step: eval_merged, metric: eval_loss, mode: min}}
""")
    return path


def clean_pipeline_yaml(tmp):
    """clean (planted duplicates) -> train on the cleaned dataset -> eval -> promote."""
    rows, seen = [], set()
    for r in json.load(open(f"{ROOT}/examples/data/demo_train.json")):
        key = json.dumps(r, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append(r)
        if len(rows) == 40:
            break
    raw = rows + rows[:10]  # 10 planted exact duplicates
    os.makedirs(f"{tmp}/raw")
    with open(f"{tmp}/raw/support.json", "w") as f:
        json.dump(raw, f)
    with open(f"{tmp}/raw/dataset_info.json", "w") as f:
        json.dump({"support_raw": {"file_name": "support.json"}}, f)
    path = f"{tmp}/clean-pipeline.yaml"
    common = job_keys(tmp)
    with open(path, "w") as f:
        f.write(f"""name: e2e-clean
steps:
  - name: clean
    job:
      kind: clean
      dataset: support_raw
      dataset_dir: {tmp}/raw
      output_dir: {tmp}/cleaned
      clean:
        dataset_name: support_clean
        min_chars: 5
  - name: train
    needs: [clean]
    job:
      {common}
      finetuning_type: lora
      lora_rank: 8
      dataset: support_clean
      dataset_dir: ${{steps.clean.output_dir}}
      output_dir: {tmp}/train
      per_device_train_batch_size: 4
      learning_rate: 5.0e-3
      num_train_epochs: 1
      logging_steps: 1
      save_steps: 0
  - name: eval
    needs: [train]
    job:
      kind: eval
      {common}
      adapter_name_or_path: ${{steps.train.output_dir}}
      dataset_dir: {ROOT}/examples/data
      dataset: demo_eval
      output_dir: ${{steps.train.output_dir}}/eval
  - name: promote
    needs: [eval]
    promote: {{model: clean-bot, train_step: train, eval_step: eval, metric: eval_loss, mode: min}}
""")
    return path


def tree_hashes(d):
    out = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            out[name] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def step(shown, name):
    return next(s for s in shown["steps"] if s["name"] == name)


def prepare(bindir, tmp):
    """The merged bin directory, a tiny base model and the pipeline file."""
    bindir = merged_bindir(bindir, tmp)
    make_tokenizer(f"{tmp}/tok")
    run([os.path.join(bindir, "anneal-train"), "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer",
         f"{tmp}/tok", "--out", f"{tmp}/base", "--seed", "2"])
    return bindir, pipeline_yaml(tmp)


def case_promote(bindir, tmp):
    bindir, spec = prepare(bindir, tmp)
    with Cluster(bindir, f"{tmp}/home") as c:
        first = c.anneal("pipeline", "submit", spec).stdout.strip()
        shown = c.wait_run(first)
        assert shown["state"] == "PIPELINE_SUCCEEDED", json.dumps(shown, indent=1)
        train1, eval1, promote1 = step(shown, "train"), step(shown, "eval"), step(shown, "promote")
        assert train1["output_dir"] == f"{tmp}/train/{first}", train1
        assert promote1.get("promoted") is True, promote1
        loss1 = eval1["metrics"]["eval_loss"]
        prod_dir = train1["output_dir"]
        before = tree_hashes(prod_dir)
        assert any(n.endswith(".safetensors") for n in before), before
        jobs = c.anneal("ls").stdout
        assert train1["job_id"] in jobs and eval1["job_id"] in jobs, jobs  # ordinary jobs

        second = c.anneal("pipeline", "submit", spec, "--set", "train.learning_rate=1e-9").stdout.strip()
        shown = c.wait_run(second)
        assert shown["state"] == "PIPELINE_SUCCEEDED", json.dumps(shown, indent=1)
        train2, eval2, promote2 = step(shown, "train"), step(shown, "eval"), step(shown, "promote")
        assert train2["output_dir"] == f"{tmp}/train/{second}", train2  # its own directory
        loss2 = eval2["metrics"]["eval_loss"]
        assert loss2 > loss1, (loss1, loss2)
        assert not promote2.get("promoted", False), promote2
        assert "eval_loss" in promote2["message"], promote2
        assert tree_hashes(prod_dir) == before, "the production version's files changed"
        print(f"run 1 {first}: eval_loss {loss1:.4f} promoted ({promote1['model_version']}); "
              f"run 2 {second}: eval_loss {loss2:.4f} candidate ({promote2['model_version']}): {promote2['message']}")


def case_export(bindir, tmp):
    bindir, _ = prepare(bindir, tmp)
    with Cluster(bindir, f"{tmp}/home") as c:
        run_id = c.anneal("pipeline", "submit", export_pipeline_yaml(tmp)).stdout.strip()
        shown = c.wait_run(run_id)
        assert shown["state"] == "PIPELINE_SUCCEEDED", json.dumps(shown, indent=1)
        merge = step(shown, "merge")
        assert merge["kind"] == "export", merge
        assert merge["output_dir"] == f"{tmp}/merged/{run_id}", merge
        shown_job = json.loads(c.anneal("--json", "show", merge["job_id"]).stdout)
        job = shown_job.get("job", shown_job)
        assert job.get("kind") == "JOB_EXPORT" and job.get("state") == "JOB_SUCCEEDED", json.dumps(shown_job)[:3000]
        files = sorted(os.listdir(merge["output_dir"]))
        assert "config.json" in files and "tokenizer.json" in files, files
        assert any(n.endswith(".safetensors") for n in files) and "adapter_config.json" not in files, files
        merged, adapter = step(shown, "eval_merged"), step(shown, "eval_adapter")
        lm, la = merged["metrics"]["eval_loss"], adapter["metrics"]["eval_loss"]
        assert abs(lm - la) / la < 1e-4, f"the merged model's eval_loss {lm} differs from the adapter's {la}"
        promote = step(shown, "promote")
        assert promote.get("promoted") is True, promote
        version = json.loads(c.anneal("--json", "models", "show", "demo-merged").stdout)
        text = json.dumps(version)
        assert "MODEL_MERGED" in text and merge["output_dir"] in text, text
        assert "demo_train" in text, f"the version does not record the train step's dataset: {text}"
        print(f"export: {merge['job_id']} wrote {files}; eval_loss merged {lm:.6f} = adapter {la:.6f}; "
              f"promoted {promote['model_version']} (the merged model)")


def case_clean(bindir, tmp):
    bindir, _ = prepare(bindir, tmp)
    with Cluster(bindir, f"{tmp}/home") as c:
        run_id = c.anneal("pipeline", "submit", clean_pipeline_yaml(tmp)).stdout.strip()
        shown = c.wait_run(run_id)
        assert shown["state"] == "PIPELINE_SUCCEEDED", json.dumps(shown, indent=1)
        clean, train = step(shown, "clean"), step(shown, "train")
        assert clean["kind"] == "clean", clean
        out = clean["output_dir"]
        assert out == f"{tmp}/cleaned/{run_id}", clean
        info = json.load(open(f"{out}/dataset_info.json"))
        assert list(info) == ["support_clean"] and info["support_clean"]["file_name"] == "support_clean.jsonl", info
        kept_rows = [line for line in open(f"{out}/support_clean.jsonl") if line.strip()]
        report = json.load(open(f"{out}/clean_report.json"))
        assert len(kept_rows) == 40 and report["kept"] == 40 and report["rows"] == 50, report
        assert report["dropped"] == {"exact_duplicate": 10}, report["dropped"]
        # The job record carries the counts (a metrics point) and `anneal show` prints them.
        assert clean["metrics"]["kept"] == 40 and clean["metrics"]["dropped_exact_duplicate"] == 10, clean
        shown_job = json.loads(c.anneal("--json", "show", clean["job_id"]).stdout)
        job = shown_job.get("job", shown_job)
        assert job.get("kind") == "JOB_CLEAN" and job.get("state") == "JOB_SUCCEEDED", json.dumps(shown_job)[:3000]
        text = c.anneal("show", clean["job_id"]).stdout
        assert "40 kept" in text and "10 exact_duplicate" in text, text
        # The train step read the cleaned dataset: 40 rows, 1 epoch of batch 4 = 10 steps (50 raw rows: 13).
        train_job = json.loads(c.anneal("--json", "show", train["job_id"]).stdout)
        totals = {int(m["total_steps"]) for m in train_job.get("last_metrics", []) if int(m.get("total_steps", 0))}
        assert totals == {10}, json.dumps(train_job.get("last_metrics", []))[:2000]
        promote = step(shown, "promote")
        assert promote.get("promoted") is True, promote
        print(f"clean: {clean['job_id']} kept 40 of 50 rows (10 exact duplicates) into {out}; train "
              f"{train['job_id']} ran {totals.pop()} steps on them; promoted {promote['model_version']}")


def trigger(c, schedule):
    """`anneal schedule trigger`: the run the fire started (the CLI's line names it)."""
    out = c.anneal("schedule", "trigger", schedule).stdout
    assert f"schedule default/{schedule} fired: started, pipeline run " in out, out
    run = out.split("pipeline run ", 1)[1].split()[0].rstrip(":")
    shown = json.loads(c.anneal("--json", "schedule", "show", schedule).stdout)["schedule"]
    fire = shown["history"][-1]
    assert fire["run_id"] == run and fire["triggered_by"], fire
    return run


def case_schedule(bindir, tmp):
    """The retraining loop by schedule: a schedule's stored pipeline, fired now by hand (`anneal schedule trigger`;
    cron fire times are e2e.schedule_kill_fire's), runs train -> eval -> promote (promoted, the model's first
    version); a second schedule of the same pipeline with a learning rate too small to learn (--set) runs it again:
    a worse eval_loss, registered as a candidate and not promoted; production is still version 1 with its files
    intact after the second run's checkpoint retention."""
    bindir, spec = prepare(bindir, tmp)
    with Cluster(bindir, f"{tmp}/home") as c:
        c.anneal("schedule", "create", "weekly", "--cron", "0 3 * * 1", spec)
        first = trigger(c, "weekly")
        shown = c.wait_run(first)
        assert shown["state"] == "PIPELINE_SUCCEEDED", json.dumps(shown, indent=1)
        assert shown["origin"].startswith("schedule default/weekly triggered by "), shown["origin"]
        promote1, loss1 = step(shown, "promote"), step(shown, "eval")["metrics"]["eval_loss"]
        assert promote1.get("promoted") is True, promote1
        prod_dir = step(shown, "train")["output_dir"]
        before = tree_hashes(prod_dir)

        c.anneal("schedule", "create", "weekly-worse", "--cron", "0 3 * * 1", "--set", "train.learning_rate=1e-9",
                 spec)
        second = trigger(c, "weekly-worse")
        shown = c.wait_run(second)
        assert shown["state"] == "PIPELINE_SUCCEEDED", json.dumps(shown, indent=1)
        promote2, loss2 = step(shown, "promote"), step(shown, "eval")["metrics"]["eval_loss"]
        assert loss2 > loss1, (loss1, loss2)
        assert not promote2.get("promoted", False), promote2
        assert tree_hashes(prod_dir) == before, "the production version's files changed"
        models = c.anneal("models", "ls").stdout
        assert "demo-bot" in models and " v1 " in models, models  # production is still version 1
        print(f"schedule: trigger 1 {first}: eval_loss {loss1:.4f} promoted; trigger 2 {second} (--set "
              f"learning_rate 1e-9): eval_loss {loss2:.4f} kept as a candidate: {promote2['message']}")

if __name__ == "__main__":
    run_cases({"promote": case_promote, "schedule": case_schedule, "export": case_export, "clean": case_clean},
              binary_flag="--bindir")
