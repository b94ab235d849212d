package procfs

import (
	"net"
	"os"
	"testing"
)

func TestParse(t *testing.T) {
	// The command name may hold spaces and parentheses; the fields follow the last ')'.
	st, ok := Parse("42 (a (weird) name) S 7 42 1 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0 12345 0 0")
	if !ok || st.State != 'S' || st.PPID != 7 || st.PGRP != 42 || st.CPU.Seconds() != 3 || st.StartTime != 12345 {
		t.Errorf("Parse = %+v, %v", st, ok)
	}
	if _, ok := Parse("garbage"); ok {
		t.Error("Parse accepted garbage")
	}
}

func TestSelf(t *testing.T) {
	self, ok := Read(os.Getpid())
	if !ok || self.PPID != os.Getppid() {
		t.Fatalf("Read(self) = %+v, %v; want ppid %d", self, ok, os.Getppid())
	}
	if rss, err := PeakRSS(os.Getpid()); err != nil || rss == 0 {
		t.Errorf("PeakRSS(self) = %d, %v", rss, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if pid, err := Listener(ln.Addr().(*net.TCPAddr).Port); err != nil || pid != os.Getpid() {
		t.Errorf("Listener = %d, %v; want this process %d", pid, err, os.Getpid())
	}
}
