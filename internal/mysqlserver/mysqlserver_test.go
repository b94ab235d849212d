package mysqlserver_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/jetjobs/jetjobs/internal/mysqlserver"
)

func TestServer(t *testing.T) {
	bin := mysqlserver.Binary()
	if bin == "" {
		t.Fatalf("%v: the tests need one; %s", mysqlserver.ErrNoBinary, mysqlserver.InstallHint)
	}

	t.Run("a started server answers; Stop ends it and removes its directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "server")
		s, err := mysqlserver.Start(bin, dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := mysqlserver.Ping(s.DSN); err != nil {
			t.Fatalf("ping %s: %v", s.DSN, err)
		}
		pid := s.PID()
		s.Stop()
		select {
		case <-s.Done():
		default:
			t.Fatal("Stop returned before the server exited")
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("server process %d is still there: %v", pid, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("the server's directory is still there: %v", err)
		}
	})

	t.Run("a relative directory works", func(t *testing.T) {
		t.Chdir(t.TempDir())
		s, err := mysqlserver.Start(bin, "server")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Stop()
		if !filepath.IsAbs(s.Dir) {
			t.Errorf("Dir %q is not absolute", s.Dir)
		}
		if err := mysqlserver.Ping(s.DSN); err != nil {
			t.Fatalf("ping %s: %v", s.DSN, err)
		}
	})

	t.Run("a halted server restarts on the same port with its data", func(t *testing.T) {
		s, err := mysqlserver.Start(bin, filepath.Join(t.TempDir(), "server"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Stop()
		db, err := sql.Open("mysql", s.DSN)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, q := range []string{"CREATE DATABASE kept", "CREATE TABLE kept.t (id int PRIMARY KEY)", "INSERT INTO kept.t VALUES (7)"} {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if err := s.Restart(); err == nil {
			t.Error("Restart of a running server succeeded")
		}
		ctx, cancel := context.WithTimeout(context.Background(), mysqlserver.StartupTimeout)
		defer cancel()
		if err := s.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
			pid := s.PID()
			s.Halt(sig)
			if err := mysqlserver.Ping(s.DSN); err == nil {
				t.Fatalf("the server answers after Halt(%v)", sig)
			}
			if err := s.Restart(); err != nil {
				t.Fatalf("Restart after Halt(%v): %v", sig, err)
			}
			if s.PID() == pid {
				t.Errorf("Restart after Halt(%v) kept pid %d", sig, pid)
			}
			var id int
			if err := db.QueryRow("SELECT id FROM kept.t").Scan(&id); err != nil || id != 7 {
				t.Fatalf("after Halt(%v) and Restart the row reads %d, %v; want 7", sig, id, err)
			}
		}
	})

	t.Run("Ping fails where no server answers", func(t *testing.T) {
		port, err := mysqlserver.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if err := mysqlserver.Ping(fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port)); err == nil {
			t.Error("Ping succeeded on a free port")
		}
	})
}
