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
var jetjobsColumns = []struct{ name, ddl string }{
	{"attempts", "`attempts` int unsigned NOT NULL DEFAULT 0"},
	{"lease_token", "`lease_token` char(32) NOT NULL DEFAULT ''"},
	{"lease_expires", "`lease_expires` datetime(3) DEFAULT NULL"},
	{"dispatched_time", "`dispatched_time` datetime(3) DEFAULT NULL"},
}

// The jobs table's index, its name as MariaDB gives DataJoint's unnamed INDEX.
const jobsIndexDDL = "KEY `status` (`status`, `priority`, `scheduled_time`)"

// The table options of DataJoint's tables.
const jobsTableOptions = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"

// dataJointTypeComment matches DataJoint's type prefix of a column comment (":uuid:…").
var dataJointTypeComment = regexp.MustCompile(`^:[^:]+:`)

// createJobsTableSQL is the CREATE TABLE IF NOT EXISTS of the jobs table: the key columns with
// the target's column types, DataJoint's columns, jetjobs' columns, the primary key and
// DataJoint's index, and the comment 'Job queue for `schema`.`target`'.
func (j *Jobs) createJobsTableSQL() string {
	var lines []string
	for _, c := range j.t.KeyColumns {
		line := quoteIdent(c.Name) + " " + c.ColumnType
		if isStringType(c.DataType) && c.Charset != "" && (c.Charset != "utf8mb4" || c.Collation != "utf8mb4_general_ci") {
			// Keep the target's character set and collation, so the key compares as in the target.
			line += " CHARACTER SET " + c.Charset + " COLLATE " + c.Collation
		}
		line += " NOT NULL"
		// DataJoint declares a key column with its DataJoint type (original_type), which it keeps
		// in the comment; other key columns have no comment.
		if typ := dataJointTypeComment.FindString(c.Comment); typ != "" {
			line += " COMMENT " + quoteString(typ)
		}
		lines = append(lines, line)
	}
	lines = append(lines, dataJointColumnsDDL...)
	for _, c := range jetjobsColumns {
		lines = append(lines, c.ddl)
	}
	lines = append(lines, "PRIMARY KEY ("+j.t.keyList("")+")", jobsIndexDDL)
	comment := "Job queue for " + quoteIdent(j.t.Schema) + "." + quoteIdent(j.t.Name)
	return "CREATE TABLE IF NOT EXISTS " + j.table + " (\n  " + strings.Join(lines, ",\n  ") + "\n) " +
		jobsTableOptions + " COMMENT=" + quoteString(comment)
}

func isStringType(dataType string) bool {
	switch strings.ToLower(dataType) {
	case "char", "varchar", "enum", "set", "tinytext", "text", "mediumtext", "longtext":
		return true
	}
	return false
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
	if _, err := j.db.ExecContext(ctx, j.createJobsTableSQL()); err != nil {
		return fmt.Errorf("jobsdb: declare %s: %w", j.t.JobsFullName(), err)
	}
	for attempt := 0; ; attempt++ {
		missing, err := j.checkJobsTable(ctx)
		if err != nil {
			return fmt.Errorf("jobsdb: declare %s: %w", j.t.JobsFullName(), err)
		}
		if len(missing) == 0 {
			j.declared.Store(true)
			return nil
		}
		_, err = j.db.ExecContext(ctx, "ALTER TABLE "+j.table+" ADD COLUMN "+strings.Join(missing, ", ADD COLUMN "))
		if err == nil {
			continue
		}
		if mysqlErrorNumber(err) != errDupFieldName || attempt >= 3 {
			return fmt.Errorf("jobsdb: declare %s: add the jetjobs columns: %w", j.t.JobsFullName(), err)
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

// checkJobsTable reads the jobs table's columns and primary key, and returns the DDL of the
// jetjobs columns it lacks.
func (j *Jobs) checkJobsTable(ctx context.Context) ([]string, error) {
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
	var missing []string
	for _, c := range jetjobsColumns {
		if !have[c.name] {
			missing = append(missing, c.ddl)
		}
	}
	return missing, nil
}
