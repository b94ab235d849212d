#!/bin/sh
# The demo's handler for jetjobs_demo.__analysis: computes one key, as DataJoint's make(key).
#
# The worker runs it once per job (worker --exec 'sh demo/analysis.sh') and gives it the key
# as JSON on stdin ({"subject_id":3,"session_id":7}) and as environment variables
# (JETJOBS_KEY_SUBJECT_ID=3, JETJOBS_KEY_SESSION_ID=7), with JETJOBS_TABLE, JETJOBS_ATTEMPT
# and TRACEPARENT. What it prints on stdout (a JSON object or array of rows) is inserted into
# the target table in the same transaction that completes the job. Exit status: 0 success,
# 75 retry later (with backoff), anything else an error whose message is the end of stderr.
#
# In the demo, session 13 of every subject fails, and subject 2's session 4 asks for a retry on
# its first attempt. DEMO_WORK_SECONDS is the simulated computing time (default 0.3).
set -eu

key=$(cat) # the key as JSON, for handlers that parse it; this one uses the variables
subject=$JETJOBS_KEY_SUBJECT_ID
session=$JETJOBS_KEY_SESSION_ID

sleep "${DEMO_WORK_SECONDS:-0.3}"

if [ "$session" -eq 13 ]; then
  echo "ValueError: subject $subject, session 13: the recording is corrupt (no spikes found)" >&2
  exit 1
fi
if [ "$subject" -eq 2 ] && [ "$session" -eq 4 ] && [ "$JETJOBS_ATTEMPT" -eq 1 ]; then
  echo "TimeoutError: the file server is busy; try again later" >&2
  exit 75
fi

# The "analysis": a number derived from the key, with one decimal.
result=$(( (subject * 37 + session * 11) % 100 ))
printf '{"result": %d.%d}\n' "$result" "$(( session % 10 ))"
