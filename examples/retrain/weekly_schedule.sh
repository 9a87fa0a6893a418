#!/usr/bin/env bash
# Weekly retraining: every Monday at 03:00 Berlin time, run the retraining pipeline (train on this week's data ->
# evaluate on the held-out set -> promote the adapter only if it beats production). docs/pipelines.md,
# "Schedules", explains every flag.
#
#   --cron "0 3 * * 1"       minute 0, hour 3, any day of month, any month, Monday (1; SUN-SAT names work too)
#   --tz Europe/Berlin       the cron's time zone: 03:00 is Berlin time, summer and winter alike
#   --concurrency forbid     if last week's run is still going, this week's fire is skipped (and recorded)
#   --missed run-once        if the coordinator was down at 03:00, one run starts when it is back
#   --set KEY=VALUE          per-schedule overrides of the pipeline (STEP.KEY), applied to every run
#
# The pipeline YAML is read now and stored in the schedule: later edits of the file change nothing (delete and
# create the schedule again). The schedule runs as you; you must stay a member of its team.
set -euo pipefail
cd "$(dirname "$0")"

anneal schedule create weekly-retrain \
  --cron "0 3 * * 1" --tz Europe/Berlin \
  --concurrency forbid --missed run-once \
  --set train.learning_rate=1.0e-4 \
  weekly_pipeline.yaml

anneal schedule next weekly-retrain -n 4   # the next four Mondays, 03:00 Berlin (printed in your local time)

# Or: retrain whenever new data lands in the team's dataset directory, checked every 10 minutes (the first check
# only records the data's hash; a later change fires):
#   anneal schedule create retrain-on-new-data --on-data-change /data/nlp/datasets/support \
#     --check-interval 10m --concurrency queue weekly_pipeline.yaml
