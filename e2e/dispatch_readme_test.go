package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestREADMENothingButADatabase runs the README's section "Running with nothing but a
// database" as written: its configuration file, then its commands by bash (the scheduler in
// the background). The only changes: the database "lab" and the DSN are the test's, and
// ./analysis.sh is the test's handler. No NATS server answers at the NATS URL the programs
// would use, and every key is computed once.
func TestREADMENothingButADatabase(t *testing.T) {
	e := newEnv(t, deadNATS(t))
	e.pipeline(10, 20)
	snippets := readmeSection(t, "Running with nothing but a database")
	if len(snippets) != 2 || snippets[0].lang != "json" || snippets[1].lang != "sh" {
		t.Fatalf("the section's code blocks changed: %+v", snippets)
	}
	subst := strings.NewReplacer("lab.", e.db.Name+".", "root@tcp(127.0.0.1:3306)/", e.db.ServerDSN,
		"./analysis.sh", filepath.Join(e.dir, "handler.sh"))
	if err := os.WriteFile(filepath.Join(e.dir, "jetjobs.json"), []byte(subst.Replace(snippets[0].text)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(e.dir, "snippet.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("bash", "-e", "-c", subst.Replace(snippets[1].text))
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"), "CALLS_LOG="+e.calls,
		"JETJOBS_NATS_URL="+e.natsURL) // the URL a program would use for NATS: nothing answers there
	cmd.Stdout, cmd.Stderr = out, out // a file: the backgrounded scheduler keeps it open
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }) // the scheduler, left running
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(waitTimeout):
		err = fmt.Errorf("not done within %v", waitTimeout)
	}
	log, _ := os.ReadFile(out.Name())
	if err != nil {
		t.Fatalf("the section's commands: %v\n%s", err, log)
	}
	if n := e.count("SELECT COUNT(*) FROM __analysis"); n != 200 {
		t.Errorf("%d keys computed, want 200\n%s", n, log)
	}
	e.checkInvariants(nil, lease)
	if !strings.Contains(string(log), "success_count: 200") || !strings.Contains(string(log), "dispatch=mysql") {
		t.Errorf("the worker did not compute the 200 keys from MySQL:\n%s", log)
	}
}
