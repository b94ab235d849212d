package jobsdb

import (
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"testing"
)

// typedColumns is a primary key with one column of each common key type; DataJoint's uuid is
// binary(16) with a ':uuid:' comment.
const typedColumns = "ti tinyint NOT NULL, ub bigint unsigned NOT NULL, dc decimal(8,3) NOT NULL, vc varchar(20) NOT NULL, " +
	"ch char(4) NOT NULL, dt date NOT NULL, ts datetime(3) NOT NULL, en enum('lo','hi') NOT NULL, vb varbinary(8) NOT NULL, " +
	"id binary(16) NOT NULL COMMENT ':uuid:', PRIMARY KEY (ti, ub, dc, vc, ch, dt, ts, en, vb, id)"

const typedKey = "ti, ub, dc, vc, ch, dt, ts, en, vb, id"

// TestKeyTypesThroughDatabase: keys of every common type come out of MySQL in the canonical
// form ParseKey gives, and address their rows.
func TestKeyTypesThroughDatabase(t *testing.T) {
	t.Parallel()
	f := setup(t, "__typed", Options{},
		"CREATE TABLE rec ("+typedColumns+")",
		"CREATE TABLE __typed ("+typedColumns+", res int NOT NULL DEFAULT 0, FOREIGN KEY ("+typedKey+") REFERENCES rec ("+typedKey+"))",
		"INSERT INTO rec VALUES "+
			"(-5, 18446744073709551615, 12345.678, 'héllo wörld', 'ab', '2024-02-29', '2024-01-02 03:04:05.678', 'hi', X'00FF10', "+
			"UNHEX('6BA7B8109DAD11D180B400C04FD430C8')), "+
			"(127, 0, -0.5, '', 'x', '1000-01-01', '9999-12-31 23:59:59.999', 'lo', X'', UNHEX(REPEAT('00', 16)))")
	want := []string{
		`{"ti":-5,"ub":18446744073709551615,"dc":"12345.678","vc":"héllo wörld","ch":"ab","dt":"2024-02-29",` +
			`"ts":"2024-01-02 03:04:05.678","en":"hi","vb":"AP8Q","id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8"}`,
		`{"ti":127,"ub":0,"dc":"-0.500","vc":"","ch":"x","dt":"1000-01-01","ts":"9999-12-31 23:59:59.999","en":"lo","vb":"",` +
			`"id":"00000000-0000-0000-0000-000000000000"}`,
	}
	f.refresh(t, RefreshOptions{})
	jobs, err := f.jobs.List(f.ctx, Filter{})
	if err != nil || len(jobs) != 2 {
		t.Fatalf("%d jobs, %v", len(jobs), err)
	}
	var got []string
	for _, j := range jobs {
		b, err := f.target.KeyJSON(j.Key)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(b))
	}
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("keys from the database\n%s\nwant\n%s", got, want)
	}
	for _, w := range want {
		key, err := f.target.ParseKey([]byte(w))
		if err != nil {
			t.Fatal(err)
		}
		leases := f.reserve(t, key)
		if len(leases) != 1 || !reflect.DeepEqual(leases[0].Key, key) {
			t.Fatalf("reserve %s: %+v", w, leases)
		}
		f.record(t, success(leases[0], Row{"res": 1}))
	}
	if n := f.count(t, "{target}", "res = 1 AND ((ub = 18446744073709551615 AND dc = 12345.678 AND vb = X'00FF10' AND "+
		"id = UNHEX('6BA7B8109DAD11D180B400C04FD430C8') AND ts = '2024-01-02 03:04:05.678') OR (ti = 127 AND vb = ''))"); n != 2 {
		t.Fatalf("%d target rows with the exact key values, want 2", n)
	}
}

// TestKeyInjection: SQL in key values is refused by the column type, or stored and matched
// literally without touching other rows (invariant 4).
func TestKeyInjection(t *testing.T) {
	t.Parallel()
	words := []string{"plain", "1; DROP TABLE word", "' OR 1=1 --", `\' OR 1=1 #`, "`w`", "x'); DELETE FROM word; --", "%", "_"}
	// setupWords has a target keyed by a varchar and a pending job for each of words.
	setupWords := func(t *testing.T) *fixture {
		t.Helper()
		f := setup(t, "__count", Options{},
			"CREATE TABLE word (w varchar(64) NOT NULL, PRIMARY KEY (w))",
			"CREATE TABLE __count (w varchar(64) NOT NULL, n int NOT NULL DEFAULT 0, PRIMARY KEY (w), FOREIGN KEY (w) REFERENCES word (w))")
		for _, w := range words {
			if _, err := f.sql.ExecContext(f.ctx, "INSERT INTO word VALUES (?)", w); err != nil {
				t.Fatal(err)
			}
		}
		if res := f.refresh(t, RefreshOptions{}); res.Added != int64(len(words)) {
			t.Fatalf("added %d", res.Added)
		}
		return f
	}

	t.Run("string values address exactly their row", func(t *testing.T) {
		t.Parallel()
		f := setupWords(t)
		for _, w := range words[1:] {
			data, _ := json.Marshal(map[string]string{"w": w})
			key, err := f.target.ParseKey(data)
			if err != nil {
				t.Fatal(err)
			}
			leases := f.reserve(t, key)
			if len(leases) != 1 || leases[0].Key[0] != w {
				t.Fatalf("reserve %q: %+v", w, leases)
			}
			if n := f.count(t, "{jobs}", "`status` = 'reserved'"); n != 1 {
				t.Fatalf("%d jobs reserved by key %q", n, w)
			}
			f.record(t, success(leases[0], Row{"n": len(w)}))
		}
		if f.count(t, "{target}", "TRUE") != len(words)-1 || f.count(t, "word", "TRUE") != len(words) {
			t.Fatal("rows changed beyond the keys")
		}
		if f.get(t, Key{"plain"}).Status != StatusPending {
			t.Fatal("the plain job changed")
		}
	})
	t.Run("restrictions and ignore take values literally", func(t *testing.T) {
		t.Parallel()
		f := setupWords(t)
		n, err := f.jobs.Delete(f.ctx, Filter{Restrictions: []Restriction{{Equal: map[string]any{"w": "' OR 1=1 --"}}}})
		if err != nil || n != 1 || f.count(t, "{jobs}", "`w` = ?", "' OR 1=1 --") != 0 {
			t.Fatalf("deleted %d, %v; want the one job of that literal key", n, err)
		}
		if n, err := f.jobs.Delete(f.ctx, Filter{Restrictions: []Restriction{{Equal: map[string]any{"w": "' OR 1=1 -- none"}}}}); err != nil || n != 0 {
			t.Fatalf("deleted %d, %v; want 0 for a key without a job", n, err)
		}
		if err := f.jobs.Ignore(f.ctx, Key{"' OR '1'='1"}); err != nil {
			t.Fatal(err)
		}
		if f.count(t, "{jobs}", "TRUE") != len(words) || f.get(t, Key{"' OR '1'='1"}).Status != StatusIgnore {
			t.Fatal("ignore did not insert exactly one literal row")
		}
	})
	t.Run("values that do not fit the column type are refused", func(t *testing.T) {
		t.Parallel()
		f := setupWords(t)
		for _, data := range []string{`{"w":1}`, `{"w":"` + string(make([]byte, 65)) + `"}`, `{"w":"x","w; DROP TABLE word":1}`} {
			_, err := f.target.ParseKey([]byte(data))
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("%s: %v", data, err)
			}
		}
	})

	t.Run("an integer key refuses SQL", func(t *testing.T) {
		t.Parallel()
		g := setupSimple(t, 3, Options{})
		g.refresh(t, RefreshOptions{})
		for _, data := range []string{`{"id":"1; DROP TABLE item"}`, `{"id":"1 OR 1=1"}`, `{"id":1,"id; DROP TABLE item":1}`} {
			_, err := g.target.ParseKey([]byte(data))
			wantErrIs(t, err, ErrBadKey)
		}
		_, err := g.target.KeyFromStrings(map[string]string{"id": "0 OR 1=1"})
		wantErrIs(t, err, ErrBadKey)
		_, err = g.jobs.Delete(g.ctx, Filter{Restrictions: []Restriction{{Equal: map[string]any{"id": "0 OR 1=1"}}}})
		wantErrIs(t, err, ErrBadKey)
		_, err = g.jobs.Reserve(g.ctx, []Key{{"1 OR 1=1"}})
		wantErrIs(t, err, ErrBadKey)
		if g.count(t, "{jobs}", "`status` = 'pending'") != 3 || g.count(t, "item", "TRUE") != 3 {
			t.Fatal("rows changed")
		}
	})
}
