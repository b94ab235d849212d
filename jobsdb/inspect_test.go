package jobsdb

import (
	"errors"
	"strings"
	"testing"

	"github.com/jetjobs/jetjobs/internal/mysqltest"
)

func columnNames(cols []Column) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return strings.Join(names, ",")
}

func TestInspect(t *testing.T) {
	t.Parallel()
	f := setupPipeline(t, 3, 2, 2, Options{})
	tg := f.target

	t.Run("the key is the FK-derived primary key, through a renamed foreign key", func(t *testing.T) {
		if got := columnNames(tg.KeyColumns); got != "subject_id,session_id,param_id" {
			t.Fatalf("key columns %s", got)
		}
		if got := strings.Join(tg.PrimaryKey, ","); got != "subject_id,session_id,param_id" {
			t.Fatalf("primary key %s", got)
		}
		if got := columnNames(tg.Columns); got != "subject_id,session_id,param_id,result" {
			t.Fatalf("columns %s", got)
		}
		c := tg.KeyColumns[2]
		if c.DataType != "int" || c.ColumnType != "int(11)" || c.Nullable {
			t.Fatalf("param_id %+v", c)
		}
		if tg.Schema != f.db.Name || tg.Name != "__analysis" || tg.JobsName != "~~analysis" ||
			tg.FullName() != f.db.Name+".__analysis" || tg.KeySourceConfigured {
			t.Fatalf("target %+v", tg)
		}
	})

	t.Run("the key source joins the parents and renames their columns", func(t *testing.T) {
		if !strings.Contains(tg.KeySource, "`p2`.`id` AS `param_id`") || strings.Contains(tg.KeySource, "DISTINCT") {
			t.Fatalf("key source %s", tg.KeySource)
		}
		var n int
		if err := f.sql.QueryRowContext(f.ctx, "SELECT COUNT(*) FROM ("+tg.KeySource+") AS ks").Scan(&n); err != nil || n != 12 {
			t.Fatalf("%d keys (%v), want 3×2×2", n, err)
		}
	})

	t.Run("a name without a schema is looked up in the connection's database", func(t *testing.T) {
		got, err := Inspect(f.ctx, f.sql, "`__analysis`", "")
		if err != nil || got.Schema != f.db.Name || got.KeySource != tg.KeySource {
			t.Fatalf("target %+v, %v", got, err)
		}
	})

	t.Run("an unknown table is ErrUnknownTable, named", func(t *testing.T) {
		for _, name := range []string{f.db.Name + ".nope", f.db.Name + ".__ANALYSIS", "no_such_schema.__analysis", f.db.Name + ".`x`` OR 1`"} {
			_, err := Inspect(f.ctx, f.sql, name, "")
			wantErrIs(t, err, ErrUnknownTable)
			schema, table, _ := splitTableName(name)
			if !strings.Contains(err.Error(), schema+"."+table) {
				t.Fatalf("error %q does not name %s", err, name)
			}
		}
		for _, name := range []string{"", ".", "a.b.c", "`unterminated"} {
			if _, err := Inspect(f.ctx, f.sql, name, ""); err == nil {
				t.Fatalf("%q accepted", name)
			}
		}
	})
}

func TestInspectJoinsParentsOnSharedColumns(t *testing.T) {
	t.Parallel()
	f := setup(t, "__fit", Options{},
		"CREATE TABLE session (subject_id int NOT NULL, session_id int NOT NULL, PRIMARY KEY (subject_id, session_id))",
		"CREATE TABLE model (subject_id int NOT NULL, model_id int NOT NULL, PRIMARY KEY (subject_id, model_id))",
		"CREATE TABLE __fit (subject_id int NOT NULL, session_id int NOT NULL, model_id int NOT NULL, PRIMARY KEY (subject_id, session_id, model_id), "+
			"FOREIGN KEY (subject_id, session_id) REFERENCES session (subject_id, session_id), "+
			"FOREIGN KEY (subject_id, model_id) REFERENCES model (subject_id, model_id))",
		"INSERT INTO session VALUES (1, 1), (1, 2), (2, 1)",
		"INSERT INTO model VALUES (1, 10), (2, 20), (2, 21), (3, 30)")
	if got := columnNames(f.target.KeyColumns); got != "subject_id,session_id,model_id" {
		t.Fatalf("key %s", got)
	}
	// Subject 1: 2 sessions × 1 model; subject 2: 1 session × 2 models; subject 3: no session.
	if res := f.refresh(t, RefreshOptions{}); res.Added != 4 {
		t.Fatalf("added %d, want 4 (parents joined on subject_id); key source %s", res.Added, f.target.KeySource)
	}
}

func TestInspectKeyColumns(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	db.Exec(t,
		"CREATE TABLE subject (subject_id int NOT NULL, PRIMARY KEY (subject_id))",
		"CREATE TABLE lab (lab_id int NOT NULL, PRIMARY KEY (lab_id))",
		"CREATE TABLE src (id int NOT NULL, grp int NOT NULL, PRIMARY KEY (id), KEY (grp))",
		// A secondary foreign key (lab_id) is not a primary parent; trial is not FK-derived.
		"CREATE TABLE __trial (subject_id int NOT NULL, trial int NOT NULL, lab_id int NOT NULL, PRIMARY KEY (subject_id, trial), "+
			"FOREIGN KEY (subject_id) REFERENCES subject (subject_id), FOREIGN KEY (lab_id) REFERENCES lab (lab_id))",
		"CREATE TABLE manual (a int NOT NULL, b varchar(10) NOT NULL, PRIMARY KEY (a, b))",
		"CREATE TABLE nokey (a int NOT NULL)",
		// A foreign key to a non-unique column: the key source needs DISTINCT.
		"CREATE TABLE __bygroup (grp int NOT NULL, PRIMARY KEY (grp), FOREIGN KEY (grp) REFERENCES src (grp))",
		"INSERT INTO src VALUES (1, 7), (2, 7), (3, 8)",
		"INSERT INTO subject VALUES (1), (2)",
		"INSERT INTO manual VALUES (1, 'x'), (2, 'y')")
	pool := openDB(t, db)
	ctx := testContext(t)

	t.Run("only primary parents give key columns", func(t *testing.T) {
		tg, err := Inspect(ctx, pool, db.Name+".__trial", "")
		if err != nil || columnNames(tg.KeyColumns) != "subject_id" {
			t.Fatalf("target %+v, %v", tg, err)
		}
	})
	t.Run("no FK-derived column is ErrNoKeyColumns", func(t *testing.T) {
		for _, table := range []string{"manual", "nokey"} {
			_, err := Inspect(ctx, pool, db.Name+"."+table, "")
			wantErrIs(t, err, ErrNoKeyColumns)
		}
	})
	t.Run("with a configured key source the key is the whole primary key", func(t *testing.T) {
		tg, err := Inspect(ctx, pool, db.Name+".manual", "SELECT a + 10 AS a, CONCAT(b, '!') AS b, 'extra' AS c FROM manual")
		if err != nil {
			t.Fatal(err)
		}
		if columnNames(tg.KeyColumns) != "a,b" || !tg.KeySourceConfigured || !strings.HasPrefix(tg.KeySource, "SELECT `ks`.`a`, `ks`.`b` FROM (") {
			t.Fatalf("target %+v", tg)
		}
		jobs := New(pool, tg, Options{})
		res, err := jobs.Refresh(ctx, RefreshOptions{Priority: 5, Delay: -1e9})
		if err != nil || res.Added != 2 {
			t.Fatalf("refresh %+v, %v", res, err)
		}
		if _, err := jobs.Get(ctx, Key{12, "y!"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a configured key source without the key columns is refused", func(t *testing.T) {
		_, err := Inspect(ctx, pool, db.Name+".manual", "SELECT a FROM manual")
		if err == nil || errors.Is(err, ErrNoKeyColumns) || !strings.Contains(err.Error(), "key source") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("a parent keyed by a non-unique column gets DISTINCT", func(t *testing.T) {
		tg, err := Inspect(ctx, pool, db.Name+".__bygroup", "")
		if err != nil || !strings.HasPrefix(tg.KeySource, "SELECT DISTINCT") {
			t.Fatalf("target %+v, %v", tg, err)
		}
		if res, err := New(pool, tg, Options{}).Refresh(ctx, RefreshOptions{Priority: 5}); err != nil || res.Added != 2 {
			t.Fatalf("refresh %+v, %v", res, err)
		}
	})
}

// TestInspectQuotesIdentifiers: names with backquotes, spaces and SQL in them are quoted
// everywhere, from declaration to completion.
func TestInspectQuotesIdentifiers(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	db.Exec(t,
		"CREATE TABLE `par``ent; DROP TABLE x` (`i d` int NOT NULL, `we``ird` varchar(10) NOT NULL, PRIMARY KEY (`i d`, `we``ird`))",
		"CREATE TABLE `_res``ult` (`i d` int NOT NULL, `we``ird` varchar(10) NOT NULL, `v` int NOT NULL DEFAULT 0, "+
			"PRIMARY KEY (`i d`, `we``ird`), FOREIGN KEY (`i d`, `we``ird`) REFERENCES `par``ent; DROP TABLE x` (`i d`, `we``ird`))",
		"INSERT INTO `par``ent; DROP TABLE x` VALUES (1, 'a'), (2, 'b`c')")
	pool := openDB(t, db)
	ctx := testContext(t)
	tg, err := Inspect(ctx, pool, "`"+db.Name+"`.`_res``ult`", "")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Name != "_res`ult" || tg.JobsName != "~~res`ult" || columnNames(tg.KeyColumns) != "i d,we`ird" {
		t.Fatalf("target %+v", tg)
	}
	jobs := New(pool, tg, Options{})
	if res, err := jobs.Refresh(ctx, RefreshOptions{Priority: 5, Delay: -1e9}); err != nil || res.Added != 2 {
		t.Fatalf("refresh %+v, %v", res, err)
	}
	key, err := tg.ParseKey([]byte("{\"i d\": 2, \"we`ird\": \"b`c\"}"))
	if err != nil {
		t.Fatal(err)
	}
	leases, err := jobs.Reserve(ctx, []Key{key})
	if err != nil || len(leases) != 1 {
		t.Fatalf("reserved %d, %v", len(leases), err)
	}
	if applied, err := jobs.Record(ctx, []Outcome{success(leases[0], Row{"v": 3})}); err != nil || !applied[0] {
		t.Fatalf("applied %v, %v", applied, err)
	}
	if p, err := jobs.Progress(ctx); err != nil || p.Total != 1 {
		t.Fatalf("progress %+v, %v", p, err)
	}
	var n int
	if err := pool.QueryRowContext(ctx, "SELECT COUNT(*) FROM `_res``ult` WHERE `we``ird` = 'b`c' AND v = 3").Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d target rows, %v", n, err)
	}
}
