package ctl

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// runNoDB runs jobsctl for commands that need no database.
func runNoDB(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
	return result{stdout.String(), stderr.String(), code}
}

func TestHelpListsEveryFlagWithItsDefault(t *testing.T) {
	t.Parallel()
	globalFlags := newGlobals().fs
	check := func(t *testing.T, out string, fs *pflag.FlagSet) {
		t.Helper()
		fs.VisitAll(func(fl *pflag.Flag) {
			loc := regexp.MustCompile(`(?m)^  (-\w, |    )--` + regexp.QuoteMeta(fl.Name) + `\b`).FindStringIndex(out)
			if loc == nil {
				t.Errorf("help does not list --%s", fl.Name)
				return
			}
			// The default follows the flag's usage, before the next flag.
			rest := out[loc[0]+2:]
			if j := strings.Index(rest[2:], "\n  -"); j > 0 {
				rest = rest[:j+2]
			}
			if !strings.Contains(strings.Join(strings.Fields(rest), " "), "(default: ") {
				t.Errorf("help of --%s has no default:\n%s", fl.Name, rest)
			}
		})
	}
	root := runNoDB(t, "--help")
	if root.code != 0 {
		t.Fatalf("--help: exit %d", root.code)
	}
	check(t, root.stdout, globalFlags)
	for _, c := range visible() {
		if !strings.Contains(root.stdout, "\n  "+c.name+" ") {
			t.Errorf("root help does not list %s", c.name)
		}
		for _, args := range [][]string{{c.name, "--help"}, {"help", c.name}, {"-h", c.name}} {
			r := runNoDB(t, args...)
			if r.code != 0 || r.stderr != "" {
				t.Errorf("jobsctl %v: exit %d, stderr %q", args, r.code, r.stderr)
			}
			check(t, r.stdout, flagsOf(c))
			check(t, r.stdout, globalFlags)
			if !strings.Contains(r.stdout, "jobsctl "+c.name) {
				t.Errorf("jobsctl %v does not show the usage line", args)
			}
		}
	}
	golden(t, "help_list.txt", runNoDB(t, "help", "list").stdout)
	golden(t, "help.txt", root.stdout)

	out := runNoDB(t, "help", "output")
	for _, cols := range [][]column{progressColumns, jobColumns, refreshColumns, streamColumns, watchColumns, deleteColumns, retryColumns, ignoreColumns, dropColumns} {
		for _, c := range cols {
			if !strings.Contains(out.stdout, " "+c.name+" ") {
				t.Errorf("help output does not document field %s", c.name)
			}
		}
	}
	if r := runNoDB(t, "help", "nosuch"); r.code != 2 {
		t.Errorf("help nosuch: exit %d, want 2", r.code)
	}
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	for _, sh := range shells {
		t.Run(sh, func(t *testing.T) {
			r := runNoDB(t, "completion", sh)
			if r.code != 0 {
				t.Fatalf("completion %s: exit %d: %s", sh, r.code, r.stderr)
			}
			for _, c := range visible() {
				if !strings.Contains(r.stdout, c.name) {
					t.Errorf("completion %s does not mention command %s", sh, c.name)
				}
				flagsOf(c).VisitAll(func(fl *pflag.Flag) {
					if !strings.Contains(r.stdout, fl.Name) {
						t.Errorf("completion %s does not mention --%s of %s", sh, fl.Name, c.name)
					}
				})
			}
			if strings.Contains(r.stdout, "__tables") == false {
				t.Errorf("completion %s does not complete table names", sh)
			}
			bin, err := exec.LookPath(sh)
			if err != nil {
				t.Skipf("%s is not installed: syntax not checked", sh)
			}
			script := filepath.Join(t.TempDir(), "jobsctl."+sh)
			os.WriteFile(script, []byte(r.stdout), 0o644)
			if out, err := exec.Command(bin, "-n", script).CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", sh, err, out)
			}
		})
	}
	if r := runNoDB(t, "completion", "tcsh"); r.code != 2 {
		t.Errorf("completion tcsh: exit %d, want 2", r.code)
	}
}

// TestBashCompletionCompletes runs the bash script's function the way bash calls it.
func TestBashCompletionCompletes(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "jobsctl.bash")
	os.WriteFile(script, []byte(bashCompletion()), 0o644)
	// COMP_WORDS[0] is a stand-in for jobsctl whose __tables prints two tables.
	prog := filepath.Join(dir, "jobsctl")
	os.WriteFile(prog, []byte("#!/bin/sh\n[ \"$1\" = __tables ] && printf 'lab.__a\\nlab.__b\\n'\n"), 0o755)
	complete := func(words ...string) []string {
		t.Helper()
		cmd := exec.Command(bash, "-c", `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _jobsctl; printf '%s\n' "${COMPREPLY[@]}"`,
			"_", script, prog)
		cmd.Args = append(cmd.Args, words...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	for _, c := range []struct {
		words []string
		want  []string
	}{
		{[]string{"pro"}, []string{"progress"}},
		{[]string{"--mysql", "x", "li"}, []string{"list"}},
		{[]string{"list", "--st"}, []string{"--status"}},
		{[]string{"list", "--status", "e"}, []string{"error"}},
		{[]string{"-o", "j"}, []string{"json"}},
		{[]string{"drop", "lab.__a", "--y"}, []string{"--yes"}},
		{[]string{"completion", "z"}, []string{"zsh"}},
		{[]string{"help", "wa"}, []string{"watch"}},
		{[]string{"list", "lab.__"}, []string{"lab.__a", "lab.__b"}},
	} {
		if got := complete(c.words...); !reflect.DeepEqual(got, c.want) {
			t.Errorf("completing %q = %q, want %q", c.words, got, c.want)
		}
	}
}

func TestParseKeyText(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want []keyPair
		err  bool
	}{
		{"a=1", []keyPair{{"a", "1"}}, false},
		{"a=1,b=2", []keyPair{{"a", "1"}, {"b", "2"}}, false},
		{" a = 1,b=x y", []keyPair{{"a", " 1"}, {"b", "x y"}}, false},
		{"name=x,y,b=2", []keyPair{{"name", "x,y"}, {"b", "2"}}, false},
		{"name=a=b", []keyPair{{"name", "a=b"}}, false},
		{`name="a,b=c",n=1`, []keyPair{{"name", "a,b=c"}, {"n", "1"}}, false},
		{`name="say \"hi\""`, []keyPair{{"name", `say "hi"`}}, false},
		{"subject_id=1 OR 1=1", []keyPair{{"subject_id", "1 OR 1=1"}}, false},
		{"name=x'; DROP TABLE t; --", []keyPair{{"name", "x'; DROP TABLE t; --"}}, false},
		{"a=", []keyPair{{"a", ""}}, false},
		{"", nil, true},
		{"a", nil, true},
		{"=1", nil, true},
		{"a b=1", nil, true},
		{`a="x"y`, nil, true},
		{`a="x`, nil, true},
	} {
		got, err := parseKeyText(c.in)
		if (err != nil) != c.err || (!c.err && !reflect.DeepEqual(got, c.want)) {
			t.Errorf("parseKeyText(%q) = %q, %v; want %q, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestKeyValueTextRoundTrips(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"plain", "a,b", "a=b", `q"uote`, "sp ace", "", "x'; DROP TABLE t; --", "tab\there"} {
		text := "name=" + keyValueText(v) + ",n=1"
		got, err := parseKeyText(text)
		if err != nil || len(got) != 2 || got[0].val != v {
			t.Errorf("%q printed as %q reads back as %q, %v", v, text, got, err)
		}
	}
}

func TestRateEstimator(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var e rateEstimator
	rate, eta := e.observe(t0, 100)
	if rate.ok || eta.ok {
		t.Errorf("first sample: rate %v eta %v, want unknown", rate, eta)
	}
	rate, eta = e.observe(t0.Add(10*time.Second), 80)
	if !rate.ok || rate.v != 2 || !eta.ok || eta.d != 40*time.Second {
		t.Errorf("20 done in 10s, 80 left: rate %v eta %v, want 2/s and 40s", rate, eta)
	}
	rate, eta = e.observe(t0.Add(20*time.Second), 90) // a refresh added jobs
	if !rate.ok || rate.v != 0.5 || eta.d != 180*time.Second {
		t.Errorf("net 10 done in 20s: rate %v eta %v, want 0.5/s and 180s", rate, eta)
	}
	// Samples older than the window are forgotten: the rate follows the recent pace.
	e.observe(t0.Add(60*time.Second), 90)
	rate, eta = e.observe(t0.Add(70*time.Second), 90)
	if !rate.ok || rate.v != 0 || eta.ok {
		t.Errorf("idle for the whole window: rate %v eta %v, want 0/s and unknown ETA", rate, eta)
	}
	rate, eta = e.observe(t0.Add(75*time.Second), 0)
	if !eta.ok || eta.d != 0 || textValue(eta, time.UTC) != "0s" || textValue(rate, time.UTC) == "-" {
		t.Errorf("all done: rate %v eta %v, want a rate and ETA 0", rate, eta)
	}
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	if got := oneLine("a\nb\tc\x1b[2Jd", 0); got != "a b c[2Jd" {
		t.Errorf("oneLine control characters = %q", got)
	}
	if got := oneLine(strings.Repeat("é", 10), 4); got != "éééé…" {
		t.Errorf("oneLine cut = %q", got)
	}
	if got := safeText("line1\nline2\x07\x1b"); got != "line1\nline2" {
		t.Errorf("safeText = %q", got)
	}
}

// TestFishCompletionCompletes asks fish for completions with the script loaded.
func TestFishCompletionCompletes(t *testing.T) {
	t.Parallel()
	fish, err := exec.LookPath("fish")
	if err != nil {
		t.Skip("fish is not installed")
	}
	script := filepath.Join(t.TempDir(), "jobsctl.fish")
	os.WriteFile(script, []byte(fishCompletion()), 0o644)
	for _, c := range []struct {
		line string
		want []string
	}{
		{"jobsctl pro", []string{"progress"}},
		{"jobsctl list --st", []string{"--status"}},
		{"jobsctl delete --status e", []string{"error"}},
		{"jobsctl -o c", []string{"csv"}},
		{"jobsctl completion ", []string{"bash", "fish", "zsh"}},
	} {
		out, err := exec.Command(fish, "-c", `source $argv[1]; complete -C $argv[2]`, script, c.line).CombinedOutput()
		if err != nil {
			t.Fatalf("fish: %v\n%s", err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			got = append(got, strings.SplitN(l, "\t", 2)[0])
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("fish completing %q = %q, want %q", c.line, got, c.want)
		}
	}
}

// FuzzParseKeyText checks that --key parsing never panics and that a parsed key printed the
// way list prints keys reads back the same.
func FuzzParseKeyText(f *testing.F) {
	for _, s := range []string{"a=1", "a=1,b=2", `name="a,b",n=1`, "subject_id=1 OR 1=1", "x=';DROP", "a=b=c,,d=", `a="\u00e9\n"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pairs, err := parseKeyText(s)
		if err != nil {
			return
		}
		parts := make([]string, len(pairs))
		for i, p := range pairs {
			if !isIdent(p.col) {
				t.Fatalf("parseKeyText(%q) gave column %q", s, p.col)
			}
			parts[i] = p.col + "=" + keyValueText(p.val)
		}
		again, err := parseKeyText(strings.Join(parts, ","))
		if err != nil || !reflect.DeepEqual(again, pairs) {
			t.Fatalf("%q → %q → %q, %v", s, pairs, again, err)
		}
	})
}
