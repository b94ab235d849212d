package jobsdb

import (
	"context"
	"database/sql"
	"reflect"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/mysqltest"
)

func TestDSNParams(t *testing.T) {
	t.Parallel()
	for dsn, want := range map[string][]string{
		"root@tcp(127.0.0.1:3306)/":                               nil,
		"root@tcp(127.0.0.1:3306)/db?parseTime=false&loc=UTC":     {"loc", "parseTime"},
		"u:p?ss/x@tcp(h:1)/db?interpolateParams=false":            {"interpolateParams"},
		"u:p@unix(/tmp/my.sock)/db?timeout=1s&parseTime=true&x=y": {"parseTime", "timeout", "x"},
		"u:p@tcp(h:1)/": nil,
	} {
		got := dsnParams(dsn)
		var names []string
		for _, n := range []string{"interpolateParams", "loc", "parseTime", "timeout", "x"} {
			if got[n] {
				names = append(names, n)
			}
		}
		if !reflect.DeepEqual(names, want) {
			t.Errorf("%s: %v, want %v", dsn, names, want)
		}
	}
}

// prepares counts the statements the server prepared on one connection.
func prepares(t *testing.T, ctx context.Context, conn *sql.Conn) int {
	t.Helper()
	var name string
	var n int
	if err := conn.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Com_stmt_prepare'").Scan(&name, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOpen(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	ctx := testContext(t)

	t.Run("times are parsed, parameters interpolated, the pool sized", func(t *testing.T) {
		pool := openDB(t, db)
		var now time.Time
		if err := pool.QueryRowContext(ctx, "SELECT NOW(3)").Scan(&now); err != nil {
			t.Fatal(err)
		}
		if now.Location() != time.Local {
			t.Fatalf("time in %v, want Local", now.Location())
		}
		conn, err := pool.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		before := prepares(t, ctx, conn)
		var one int
		if err := conn.QueryRowContext(ctx, "SELECT ?", 1).Scan(&one); err != nil {
			t.Fatal(err)
		}
		if after := prepares(t, ctx, conn); after != before {
			t.Fatalf("a parameterized query was prepared on the server (%d → %d)", before, after)
		}
		if got := pool.Stats().MaxOpenConnections; got != MaxOpenConnsDefault {
			t.Fatalf("max open connections %d", got)
		}
	})

	t.Run("options the DSN sets are kept", func(t *testing.T) {
		pool, err := Open(ctx, db.DSN+"?interpolateParams=false&parseTime=false")
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		var raw []byte
		if err := pool.QueryRowContext(ctx, "SELECT NOW(3)").Scan(&raw); err != nil || len(raw) != 23 {
			t.Fatalf("NOW(3) as %q, %v", raw, err)
		}
		conn, err := pool.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		before := prepares(t, ctx, conn)
		var one int
		if err := conn.QueryRowContext(ctx, "SELECT ?", 1).Scan(&one); err != nil {
			t.Fatal(err)
		}
		if after := prepares(t, ctx, conn); after == before {
			t.Fatal("interpolateParams=false was overridden")
		}
	})

	t.Run("jobsdb works on a pool without parseTime and interpolation", func(t *testing.T) {
		db.Exec(t, simpleDDL...)
		db.Exec(t, "INSERT INTO item VALUES (1), (2)")
		pool, err := Open(ctx, db.DSN+"?interpolateParams=false&parseTime=false")
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		target, err := Inspect(ctx, pool, "__result", "")
		if err != nil {
			t.Fatal(err)
		}
		jobs := New(pool, target, Options{})
		if _, err := jobs.Refresh(ctx, RefreshOptions{Priority: 5, Delay: -time.Second}); err != nil {
			t.Fatal(err)
		}
		leases, err := jobs.Reserve(ctx, []Key{{1}, {2}})
		if err != nil || len(leases) != 2 || leases[0].ReservedTime.IsZero() {
			t.Fatalf("leases %+v, %v", leases, err)
		}
		if _, err := jobs.Record(ctx, []Outcome{success(leases[0]), {Lease: leases[1], Kind: OutcomeError, Stack: "s"}}); err != nil {
			t.Fatal(err)
		}
		job, err := jobs.Get(ctx, Key{2})
		if err != nil || job.CompletedTime == nil || job.ErrorStack != "s" {
			t.Fatalf("job %+v, %v", job, err)
		}
	})

	t.Run("an unreachable server is an error", func(t *testing.T) {
		if _, err := Open(ctx, "root@tcp(127.0.0.1:1)/?timeout=2s"); err == nil {
			t.Fatal("no error")
		}
		if _, err := Open(ctx, "not a dsn"); err == nil {
			t.Fatal("no error for a bad DSN")
		}
	})
}
