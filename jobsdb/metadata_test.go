package jobsdb

import (
	"testing"
	"time"
)

func TestRecordFillsDataJointJobMetadata(t *testing.T) {
	t.Parallel()
	// The target as DataJoint declares it with config.jobs.add_job_metadata (adapters/mysql.py
	// job_metadata_columns).
	f := setup(t, "__result", Options{Identity: Identity{Version: "abc1234"}},
		"CREATE TABLE item (id int NOT NULL, PRIMARY KEY (id))",
		"INSERT INTO item SELECT seq FROM seq_1_to_2",
		"CREATE TABLE __result (id int NOT NULL, value int NOT NULL DEFAULT 0, "+
			"`_job_start_time` datetime(3) DEFAULT NULL, `_job_duration` float DEFAULT NULL, `_job_version` varchar(64) DEFAULT '', "+
			"PRIMARY KEY (id), FOREIGN KEY (id) REFERENCES item (id))",
	)
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, ids(1, 2)...)
	before := time.Now()
	f.record(t,
		Outcome{Lease: leases[0], Kind: OutcomeSuccess, Duration: 1500 * time.Millisecond, Rows: []Row{{"value": 1}}},
		Outcome{Lease: leases[1], Kind: OutcomeSuccess, Duration: time.Second, Rows: []Row{{"value": 2, "_job_version": "mine"}}},
	)

	t.Run("a row jetjobs inserts gets the start time, duration and version", func(t *testing.T) {
		var start time.Time
		var duration float64
		var version string
		if err := f.sql.QueryRowContext(f.ctx, f.expand("SELECT `_job_start_time`, `_job_duration`, `_job_version` FROM {target} WHERE `id` = 1")).
			Scan(&start, &duration, &version); err != nil {
			t.Fatalf("metadata not filled: %v", err)
		}
		if duration != 1.5 || version != "abc1234" {
			t.Fatalf("duration %v, version %q; want 1.5 and the worker's version", duration, version)
		}
		// Started: the recording time less the duration, in local wall-clock time (DataJoint's).
		earliest, latest := before.Add(-1500*time.Millisecond-time.Second), time.Now().Add(-1500*time.Millisecond+time.Second)
		if start.Before(earliest) || start.After(latest) {
			t.Fatalf("start time %v, want about %v", start, before.Add(-1500*time.Millisecond))
		}
	})
	t.Run("a value the row sets itself is kept", func(t *testing.T) {
		if n := f.count(t, "{target}", "`id` = 2 AND `_job_version` = 'mine' AND `_job_duration` = 1"); n != 1 {
			t.Fatal("the row's own _job_version was overwritten, or its duration not filled")
		}
	})
}

func TestRecordLeavesTargetsWithoutJobMetadataAlone(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 1, Options{Identity: Identity{Version: "abc1234"}})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, Key{1})
	// A target without the columns: inserting them would fail the whole batch.
	if applied := f.record(t, Outcome{Lease: leases[0], Kind: OutcomeSuccess, Rows: []Row{{"value": 1}}}); !applied[0] {
		t.Fatal("not recorded")
	}
	if n := f.count(t, "{target}", "`id` = 1"); n != 1 {
		t.Fatal("target row missing")
	}
}
