package jobsdb

import (
	"context"
	"fmt"
	"regexp"
	"strings"
)

// dataJointColumnsDDL are the columns DataJoint 2.x declares after the key, exactly as its
// declaration produces them on MariaDB (reference/datajoint-ddl.txt), so that DataJoint's
// Table.jobs can read and share a jobs table jetjobs created.
var dataJointColumnsDDL = []string{
	"`status` enum('pending','reserved','success','error','ignore') NOT NULL COMMENT ':enum(''pending'', ''reserved'', ''success'', ''error'', ''ignore''):'",
	"`priority` tinyint NOT NULL COMMENT ':int8:'",
	"`created_time` datetime(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT ':datetime(3):'",
	"`scheduled_time` datetime(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) COMMENT ':datetime(3):'",
	"`reserved_time` datetime(3) DEFAULT NULL COMMENT ':datetime(3):'",
	"`completed_time` datetime(3) DEFAULT NULL COMMENT ':datetime(3):'",
	"`duration` double DEFAULT NULL COMMENT ':float64:'",
	"`error_message` varchar(2047) NOT NULL DEFAULT '' COMMENT ':varchar(2047):'",
	"`error_stack` longblob DEFAULT NULL COMMENT ':<blob>:'",
	"`user` varchar(255) NOT NULL DEFAULT '' COMMENT ':varchar(255):'",
	"`host` varchar(255) NOT NULL DEFAULT '' COMMENT ':varchar(255):'",
	"`pid` int NOT NULL DEFAULT 0 COMMENT ':int32:'",
	"`connection_id` bigint NOT NULL DEFAULT 0 COMMENT ':int64:'",
	"`version` varchar(64) NOT NULL DEFAULT '' COMMENT ':varchar(64):'",
}

// dataJointColumns are the names of dataJointColumnsDDL: a table lacking one is not a jobs
// table.
var dataJointColumns = []string{"status", "priority", "created_time", "scheduled_time", "reserved_time",
	"completed_time", "duration", "error_message", "error_stack", "user", "host", "pid", "connection_id", "version"}

// jetjobsColumns are jetjobs' own columns, after DataJoint's, all with defaults so that a row
// DataJoint inserts is valid for jetjobs. Declare adds the missing ones to an existing table.
var jetjobsColumns = []jetjobsColumn{
	{"attempts", "`attempts` int unsigned NOT NULL DEFAULT 0"},
	{"lease_token", "`lease_token` char(32) NOT NULL DEFAULT ''"},
	{"lease_expires", "`lease_expires` datetime(3) DEFAULT NULL"},
	{"dispatched_time", "`dispatched_time` datetime(3) DEFAULT NULL"},
}

// jetjobsColumn is one of jetjobs' columns: its name and DDL.
type jetjobsColumn struct{ name, ddl string }

// The jobs table's index, its name as MariaDB gives DataJoint's unnamed INDEX.
const jobsIndexDDL = "KEY `status` (`status`, `priority`, `scheduled_time`)"

// The table options of DataJoint's tables.
const jobsTableOptions = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"

// dataJointTypeComment matches DataJoint's type prefix of a column comment (":uuid:…").
var dataJointTypeComment = regexp.MustCompile(`^:[^:]+:`)

func isStringType(dataType string) bool {
	switch strings.ToLower(dataType) {
	case "char", "varchar", "enum", "set", "tinytext", "text", "mediumtext", "longtext":
		return true
	}
	return false
}

// jetjobsColumnNames are the names of jetjobsColumns.
func jetjobsColumnNames() []string {
	names := make([]string, len(jetjobsColumns))
	for i, c := range jetjobsColumns {
		names[i] = c.name
	}
	return names
}

// Declare creates the jobs table with DataJoint's DDL plus the jetjobs columns, or adopts an
// existing one by adding the missing jetjobs columns. Never drops.
//
// It is idempotent and safe when several processes declare at once (CREATE TABLE IF NOT
// EXISTS; an ALTER that finds the column already added by another process reads the table
// again). An existing table whose primary key is not the target's key, or that lacks one of
// DataJoint's columns, is an error: it is left as it is, for a person to look at.
func (j *Jobs) Declare(ctx context.Context) error {
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	if _, err := j.db.ExecContext(ctx, j.stmt.createTable); err != nil {
		return fmt.Errorf("jobsdb: declare %s: %w", j.t.JobsFullName(), err)
	}
	if _, err := j.addJetjobsColumns(ctx); err != nil {
		return fmt.Errorf("jobsdb: declare %s: %w", j.t.JobsFullName(), err)
	}
	return nil
}

// addJetjobsColumns adds the jetjobs columns the existing jobs table lacks (ALTER TABLE … ADD
// COLUMN, never a drop) and returns their names; the handle then counts the table as declared.
// Another process adding them at the same moment is fine: the table is read again.
func (j *Jobs) addJetjobsColumns(ctx context.Context) (added []string, err error) {
	for attempt := 0; ; attempt++ {
		missing, err := j.checkJobsTable(ctx)
		if err != nil {
			return added, err
		}
		if len(missing) == 0 {
			j.declared.Store(true)
			return added, nil
		}
		ddl := make([]string, len(missing))
		for i, c := range missing {
			ddl[i] = c.ddl
		}
		_, err = j.db.ExecContext(ctx, j.stmt.addColumnsSQL(ddl))
		if err == nil {
			for _, c := range missing {
				added = append(added, c.name)
			}
			continue
		}
		if !isDuplicateColumn(err) || attempt >= 3 {
			return added, fmt.Errorf("add the jetjobs columns: %w", err)
		}
		// Another process added them first: read the table again.
	}
}

// ensureDeclared declares the jobs table once per handle (again after Drop, or after an
// operation found it gone).
func (j *Jobs) ensureDeclared(ctx context.Context) error {
	if j.declared.Load() {
		return nil
	}
	return j.Declare(ctx)
}

// adopting runs write, a write of the jetjobs columns outside a caller's transaction. When it
// fails because the jobs table was declared by DataJoint and lacks those columns, the table is
// adopted as Declare adopts it (ALTER TABLE … ADD COLUMN with their defaults, never a drop;
// DataJoint keeps reading and writing it), Options.Adopted is told, and write runs once more.
// So retry, reserve and the others work on a DataJoint pipeline before any refresh has run.
// Reads need no adoption (they read the missing columns as their defaults), and a write in
// the caller's transaction (RecordTx, LockLeases) is never adopted: an ALTER would commit it.
func (j *Jobs) adopting(ctx context.Context, write func() error) error {
	err := write()
	if !isUnknownColumn(err, jetjobsColumnNames()) {
		return err
	}
	actx, cancel := j.bounded(ctx)
	defer cancel()
	added, aerr := j.addJetjobsColumns(actx)
	if aerr != nil {
		return fmt.Errorf("%w: %s was declared by DataJoint and lacks jetjobs' columns (%s); adding them failed: %w",
			ErrNotAdopted, j.t.JobsFullName(), strings.Join(jetjobsColumnNames(), ", "), aerr)
	}
	if len(added) > 0 && j.opts.Adopted != nil {
		j.opts.Adopted(added)
	}
	return write()
}

// checkJobsTable reads the jobs table's columns and primary key, and returns the jetjobs
// columns it lacks.
func (j *Jobs) checkJobsTable(ctx context.Context) ([]jetjobsColumn, error) {
	cols, err := tableColumns(ctx, j.db, j.t.Schema, j.t.JobsName)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, c := range cols {
		have[c.Name] = true
	}
	for _, name := range dataJointColumns {
		if !have[name] {
			return nil, fmt.Errorf("existing table %s has no column %s: it is not a jobs table", j.t.JobsFullName(), name)
		}
	}
	pk, err := primaryKey(ctx, j.db, j.t.Schema, j.t.JobsName)
	if err != nil {
		return nil, err
	}
	want := make([]string, len(j.t.KeyColumns))
	for i, c := range j.t.KeyColumns {
		want[i] = c.Name
	}
	if strings.Join(pk, "\x00") != strings.Join(want, "\x00") {
		return nil, fmt.Errorf("existing jobs table %s is keyed by (%s) but the key of %s is (%s): "+
			"it was made for another version of the target; drop it (jobsctl drop) to start afresh",
			j.t.JobsFullName(), strings.Join(pk, ", "), j.t.FullName(), strings.Join(want, ", "))
	}
	var missing []jetjobsColumn
	for _, c := range jetjobsColumns {
		if !have[c.name] {
			missing = append(missing, c)
		}
	}
	return missing, nil
}
