package mysqlserver_test

import (
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
