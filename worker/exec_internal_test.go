package worker

import (
	"slices"
	"testing"
)

func TestCommandRunsPlainCommandLinesWithoutAShell(t *testing.T) {
	for line, want := range map[string][]string{
		"/opt/h.sh":                 {"/opt/h.sh"},
		"python3 make.py  --fast":   {"python3", "make.py", "--fast"},
		"h.sh && echo done":         {"/bin/sh", "-c", "h.sh && echo done"},
		"h.sh > out.log":            {"/bin/sh", "-c", "h.sh > out.log"},
		`python3 -c "print(1)"`:     {"/bin/sh", "-c", `python3 -c "print(1)"`},
		"FOO=1 h.sh":                {"/bin/sh", "-c", "FOO=1 h.sh"},
		"echo $JETJOBS_KEY_SUBJECT": {"/bin/sh", "-c", "echo $JETJOBS_KEY_SUBJECT"},
		"sleep 600 & wait":          {"/bin/sh", "-c", "sleep 600 & wait"},
		"h.sh ~/data/*.csv":         {"/bin/sh", "-c", "h.sh ~/data/*.csv"},
	} {
		if got := command(line).Args; !slices.Equal(got, want) {
			t.Errorf("%q runs as %q, want %q", line, got, want)
		}
	}
}
