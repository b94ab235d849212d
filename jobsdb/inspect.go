package jobsdb

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
)

// Column is one column of a target table.
type Column struct {
	Name       string // column name
	DataType   string // information_schema DATA_TYPE, e.g. "int", "varchar", "enum"
	ColumnType string // information_schema COLUMN_TYPE, e.g. "int(10) unsigned", "enum('a','b')"
	Nullable   bool
	Comment    string // COLUMN_COMMENT; DataJoint keeps its own type there, e.g. ":uuid:"
	Charset    string // CHARACTER_SET_NAME of string columns, "" for others
	Collation  string // COLLATION_NAME of string columns, "" for others
}

// Target is a target table and its jobs table, read from information_schema.
type Target struct {
	Schema     string   // database of the target and of its jobs table
	Name       string   // target table name, e.g. "__analysis"
	Columns    []Column // all columns of the target, in ordinal order
	PrimaryKey []string // the target's primary key columns, in order
	KeyColumns []Column // the key: FK-derived primary key columns, in primary key order
	JobsName   string   // "~~" + Name without leading underscores
	// KeySource is the SELECT producing the key columns, named as in KeyColumns: derived from
	// the primary parents, or the configured SQL wrapped as a derived table
	// (SELECT ks.`a`, … FROM (<configured>) AS ks).
	KeySource string
	// KeySourceConfigured reports that KeySource wraps configured SQL.
	KeySourceConfigured bool
	// Parents are the target's primary parents (the foreign keys whose columns all belong to
	// its primary key), ordered by their first column's position in the primary key: the
	// tables a derived key source joins. With a configured key source they are read all the
	// same, but the key source need not use them.
	Parents []Parent

	codecs []*codec // of KeyColumns
}

// FullName is "schema.table".
func (t *Target) FullName() string { return t.Schema + "." + t.Name }

// JobsFullName is "schema.~~table".
func (t *Target) JobsFullName() string { return t.Schema + "." + t.JobsName }

// JobsTableName is the name of the jobs table of target table name: "~~" and the name without
// its leading underscores, as DataJoint names it.
func JobsTableName(name string) string { return "~~" + strings.TrimLeft(name, "_") }

// column returns the target column named name.
func (t *Target) column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// Inspect reads the target table "schema.table" from information_schema. keySource, when not
// empty, is the configured key source SQL; otherwise the key source is derived from the
// primary parents.
//
// The key is the target's primary-key columns that come from a foreign key to a primary
// parent (a parent whose foreign-key columns all belong to the target's primary key; the
// target column may be named differently from the parent's), in primary key order, as
// DataJoint's jobs table keys them. A target with no such column is ErrNoKeyColumns unless a
// key source is configured: its key is then the whole primary key. The table may be written
// with backquotes; without a schema the connection's default database is used.
func Inspect(ctx context.Context, db *sql.DB, table, keySource string) (*Target, error) {
	schema, name, err := splitTableName(table)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: inspect: %w", err)
	}
	if schema == "" {
		var current sql.NullString
		if err := db.QueryRowContext(ctx, currentDatabaseQuery).Scan(&current); err != nil {
			return nil, fmt.Errorf("jobsdb: inspect %s: %w", table, err)
		}
		if !current.Valid {
			return nil, fmt.Errorf("jobsdb: inspect %s: %w: name the schema (schema.table)", table, ErrUnknownTable)
		}
		schema = current.String
	}
	t := &Target{Schema: schema, Name: name, JobsName: JobsTableName(name)}
	if err := t.readColumns(ctx, db); err != nil {
		return nil, err
	}
	if t.PrimaryKey, err = primaryKey(ctx, db, schema, name); err != nil {
		return nil, fmt.Errorf("jobsdb: inspect %s: %w", t.FullName(), err)
	}
	if len(t.PrimaryKey) == 0 {
		return nil, fmt.Errorf("jobsdb: inspect %s: %w: the table has no primary key", t.FullName(), ErrNoKeyColumns)
	}
	parents, err := primaryParents(ctx, db, t)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: inspect %s: %w", t.FullName(), err)
	}
	fromParents := map[string]bool{}
	for _, p := range parents {
		for _, c := range p.columns {
			fromParents[c] = true
		}
	}
	for _, pk := range t.PrimaryKey {
		if fromParents[pk] || (keySource != "" && len(fromParents) == 0) {
			col, _ := t.column(pk)
			t.KeyColumns = append(t.KeyColumns, col)
		}
	}
	if len(t.KeyColumns) == 0 {
		return nil, fmt.Errorf("jobsdb: inspect %s: %w: none of its primary key columns (%s) comes from a "+
			"foreign key to a primary parent; configure a key source for it", t.FullName(), ErrNoKeyColumns,
			strings.Join(t.PrimaryKey, ", "))
	}
	if t.codecs, err = t.keyCodecs(); err != nil {
		return nil, fmt.Errorf("jobsdb: inspect %s: %w", t.FullName(), err)
	}
	for _, p := range parents {
		t.Parents = append(t.Parents, Parent{Schema: p.schema, Table: p.table, Columns: p.columns, Refs: p.refs})
	}
	if keySource != "" {
		t.KeySource = configuredKeySource(t, keySource)
		t.KeySourceConfigured = true
	} else {
		t.KeySource = derivedKeySource(t, parents)
	}
	// Run the key source once without rows: a key source that does not produce the key columns,
	// or that the user cannot read, fails here rather than at the first refresh.
	rows, err := db.QueryContext(ctx, keySourceProbe(t))
	if err != nil {
		return nil, fmt.Errorf("jobsdb: inspect %s: key source %q: %w", t.FullName(), t.KeySource, err)
	}
	rows.Close()
	return t, nil
}

// readColumns fills t.Columns; a table with no columns in information_schema does not exist
// (or is invisible to the user). Names are compared exactly, so a table differing in case only
// is not taken for another.
func (t *Target) readColumns(ctx context.Context, db *sql.DB) error {
	cols, err := tableColumns(ctx, db, t.Schema, t.Name)
	if err != nil {
		return fmt.Errorf("jobsdb: inspect %s: %w", t.FullName(), err)
	}
	if len(cols) == 0 {
		return fmt.Errorf("jobsdb: inspect %s: %w %s (check the name, and that the user may read it)",
			t.FullName(), ErrUnknownTable, t.FullName())
	}
	t.Columns = cols
	return nil
}

func tableColumns(ctx context.Context, db *sql.DB, schema, table string) ([]Column, error) {
	rows, err := db.QueryContext(ctx, columnsQuery, schema, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []Column
	for rows.Next() {
		var tableName, nullable string
		var c Column
		if err := rows.Scan(&tableName, &c.Name, &c.DataType, &c.ColumnType, &nullable, &c.Comment, &c.Charset, &c.Collation); err != nil {
			return nil, err
		}
		if tableName != table {
			continue
		}
		c.Nullable = nullable == "YES"
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

func primaryKey(ctx context.Context, db *sql.DB, schema, table string) ([]string, error) {
	rows, err := db.QueryContext(ctx, primaryKeyQuery, schema, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var pk []string
	for rows.Next() {
		var tableName, col string
		if err := rows.Scan(&tableName, &col); err != nil {
			return nil, err
		}
		if tableName == table {
			pk = append(pk, col)
		}
	}
	return pk, rows.Err()
}

// Parent is a foreign key of a target to one of its primary parents.
type Parent struct {
	Schema string // the parent's database
	Table  string // the parent's name
	// Columns are the target's columns of the foreign key, and Refs the parent's columns they
	// reference, in the foreign key's order: a parent row's Refs[i] is the target's Columns[i].
	Columns []string
	Refs    []string
}

// FullName is "schema.table" of the parent.
func (p Parent) FullName() string { return p.Schema + "." + p.Table }

// parent is one foreign key of the target to a primary parent.
type parent struct {
	constraint string
	schema     string
	table      string
	columns    []string // target columns, in foreign key order
	refs       []string // the parent's columns they reference
	unique     bool     // refs cover a unique index of the parent: no duplicate keys
}

// primaryParents reads the target's foreign keys and keeps those to primary parents: every
// foreign key column belongs to the target's primary key (DataJoint's parents(primary=True)).
// They are ordered by the position of their first column in the primary key.
func primaryParents(ctx context.Context, db *sql.DB, t *Target) ([]parent, error) {
	rows, err := db.QueryContext(ctx, foreignKeysQuery, t.Schema, t.Name)
	if err != nil {
		return nil, err
	}
	var fks []*parent
	byName := map[string]*parent{}
	for rows.Next() {
		var tableName, constraint, col, refSchema, refTable, refCol string
		if err := rows.Scan(&tableName, &constraint, &col, &refSchema, &refTable, &refCol); err != nil {
			rows.Close()
			return nil, err
		}
		if tableName != t.Name {
			continue
		}
		p := byName[constraint]
		if p == nil {
			p = &parent{constraint: constraint, schema: refSchema, table: refTable}
			byName[constraint] = p
			fks = append(fks, p)
		}
		p.columns = append(p.columns, col)
		p.refs = append(p.refs, refCol)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	pkPos := map[string]int{}
	for i, c := range t.PrimaryKey {
		pkPos[c] = i
	}
	var parents []parent
	for _, p := range fks {
		primary := true
		for _, c := range p.columns {
			if _, ok := pkPos[c]; !ok {
				primary = false
			}
		}
		if !primary {
			continue
		}
		if p.unique, err = coversUniqueIndex(ctx, db, p.schema, p.table, p.refs); err != nil {
			return nil, err
		}
		parents = append(parents, *p)
	}
	sort.SliceStable(parents, func(a, b int) bool {
		return minPos(parents[a].columns, pkPos) < minPos(parents[b].columns, pkPos)
	})
	return parents, nil
}

func minPos(cols []string, pos map[string]int) int {
	m := len(pos)
	for _, c := range cols {
		m = min(m, pos[c])
	}
	return m
}

// coversUniqueIndex reports whether cols include all columns of a unique index of the table,
// so that projecting the table on cols yields no duplicates.
func coversUniqueIndex(ctx context.Context, db *sql.DB, schema, table string, cols []string) (bool, error) {
	rows, err := db.QueryContext(ctx, uniqueIndexesQuery, schema, table)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	have := map[string]bool{}
	for _, c := range cols {
		have[c] = true
	}
	covered := map[string]bool{}
	var order []string
	for rows.Next() {
		var tableName, index, col string
		if err := rows.Scan(&tableName, &index, &col); err != nil {
			return false, err
		}
		if tableName != table {
			continue
		}
		if _, seen := covered[index]; !seen {
			covered[index] = true
			order = append(order, index)
		}
		covered[index] = covered[index] && have[col]
	}
	if err := rows.Err(); err != nil {
		return false, err
	}
	for _, index := range order {
		if covered[index] {
			return true, nil
		}
	}
	return false, nil
}
