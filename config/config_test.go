package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	j := cfg.Jobs
	if j.DefaultPriority != 5 || j.StaleTimeout.Duration() != time.Hour || j.KeepCompleted || !j.AutoRefresh || j.VersionMethod != "none" {
		t.Errorf("DataJoint defaults not applied: %+v", j)
	}
	if cfg.MySQL.DSN != DefaultMySQLDSN || cfg.NATS.URL != DefaultNATSURL {
		t.Errorf("connection defaults not applied: %+v %+v", cfg.MySQL, cfg.NATS)
	}
	if cfg.Dispatch != "auto" {
		t.Errorf("dispatch defaults to %q, want auto", cfg.Dispatch)
	}
}

func TestDispatchFromFileAndFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jetjobs.json")
	if err := os.WriteFile(path, []byte(`{"dispatch": "nats"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "nats"},
		{[]string{"--dispatch", "mysql"}, "mysql"},
	} {
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		f := AddFlags(fs)
		f.AddDispatchFlag(fs)
		if err := fs.Parse(append([]string{"--config", path}, c.args...)); err != nil {
			t.Fatal(err)
		}
		cfg, err := f.Load(func(string) string { return "" }, nil)
		if err != nil || cfg.Dispatch != c.want {
			t.Errorf("%v: dispatch %q, %v; want %q", c.args, cfg.Dispatch, err, c.want)
		}
	}
}

func TestParseFullFile(t *testing.T) {
	cfg, err := Parse([]byte(`{
		"mysql": {"dsn": "u:p@tcp(db:3306)/"},
		"nats": {"url": "nats://n:4222", "subject_prefix": "jj", "replicas": 3, "ack_wait": 45},
		"jobs": {"default_priority": -3, "stale_timeout": 0, "keep_completed": true, "auto_refresh": false,
		         "version_method": null, "orphan_timeout": 7200, "lease_duration": 1.5, "max_attempts": 5,
		         "retry_backoff": 2, "refresh_interval": 30},
		"tables": [{"table": "lab.__analysis", "key_source": "SELECT 1 AS id"}, {"table": "lab.__other", "datajoint": "lab.pipeline.Other"}]
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Jobs.LeaseDuration.Duration() != 1500*time.Millisecond || cfg.Jobs.OrphanTimeout.Duration() != 2*time.Hour {
		t.Errorf("durations in seconds not read: %+v", cfg.Jobs)
	}
	if cfg.Jobs.VersionMethod != VersionNone {
		t.Errorf("version_method null should mean none, got %q", cfg.Jobs.VersionMethod)
	}
	if ks := cfg.Tables[0].KeySource; ks != "SELECT 1 AS id" {
		t.Errorf("key source: %q", ks)
	}
	if cfg.Tables[1].DataJoint != "lab.pipeline.Other" || cfg.Tables[0].DataJoint != "" {
		t.Errorf("datajoint classes: %+v", cfg.Tables)
	}
	if cfg.NATS.Replicas != 3 || cfg.NATS.AckWait.Duration() != 45*time.Second {
		t.Errorf("nats: %+v", cfg.NATS)
	}
}

func TestParseErrorsNameTheKey(t *testing.T) {
	cases := []struct{ name, json, want string }{
		{"unknown top-level key", `{"job": {}}`, `"job"`},
		{"unknown nested key", `{"jobs": {"stale_timout": 5}}`, `"stale_timout"`},
		{"wrong type", `{"jobs": {"default_priority": "high"}}`, "jobs.default_priority"},
		{"priority out of tinyint range", `{"jobs": {"default_priority": 200}}`, "jobs.default_priority"},
		{"negative seconds", `{"jobs": {"stale_timeout": -1}}`, "non-negative"},
		{"seconds as text", `{"jobs": {"lease_duration": "60s"}}`, "number of seconds"},
		{"bad version method", `{"jobs": {"version_method": "svn"}}`, "jobs.version_method"},
		{"table without schema", `{"tables": [{"table": "analysis"}]}`, "tables[0].table"},
		{"table listed twice", `{"tables": [{"table": "a.b"}, {"table": "a.b"}]}`, "listed twice"},
		{"datajoint class without a module", `{"tables": [{"table": "a.b", "datajoint": "Analysis"}]}`, "tables[0].datajoint"},
		{"datajoint class with shell syntax", `{"tables": [{"table": "a.b", "datajoint": "lab.A; rm -rf ~"}]}`, "tables[0].datajoint"},
		{"zero attempts", `{"jobs": {"max_attempts": 0}}`, "jobs.max_attempts"},
		{"empty dsn", `{"mysql": {"dsn": ""}}`, "mysql.dsn"},
		{"unknown dispatch", `{"dispatch": "redis"}`, "dispatch"},
		{"trailing data", `{} {}`, "after the JSON object"},
		{"not JSON", `jobs: {}`, "invalid character"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.json))
			if err == nil {
				t.Fatalf("accepted %s", c.json)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "jetjobs.json")
	if err := os.WriteFile(path, []byte(`{"mysql": {"dsn": "file@tcp(f:1)/"}, "nats": {"url": "nats://file:1"}, "tables": [{"table": "s.t"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{EnvConfig: path}
	getenv := func(k string) string { return env[k] }
	load := func(args ...string) Config {
		t.Helper()
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		f := AddFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		cfg, err := f.Load(getenv, fs.Args())
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if cfg := load(); cfg.MySQL.DSN != "file@tcp(f:1)/" || cfg.NATS.URL != "nats://file:1" {
		t.Errorf("file not applied over defaults: %+v %+v", cfg.MySQL, cfg.NATS)
	}
	env[EnvMySQLDSN], env[EnvNATSURL] = "env@tcp(e:1)/", "nats://env:1"
	if cfg := load(); cfg.MySQL.DSN != "env@tcp(e:1)/" || cfg.NATS.URL != "nats://env:1" {
		t.Errorf("environment does not override the file: %+v %+v", cfg.MySQL, cfg.NATS)
	}
	cfg := load("--mysql", "flag@tcp(x:1)/", "--nats", "nats://flag:1", "s.t", "s.u")
	if cfg.MySQL.DSN != "flag@tcp(x:1)/" || cfg.NATS.URL != "nats://flag:1" {
		t.Errorf("flags do not override the environment: %+v %+v", cfg.MySQL, cfg.NATS)
	}
	if got := strings.Join(cfg.TableNames(), ","); got != "s.t,s.u" {
		t.Errorf("argument tables not merged with configured ones: %s", got)
	}
}

func TestLoadTellsWhetherANATSURLWasGiven(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	withURL := write("url.json", `{"nats": {"url": "`+DefaultNATSURL+`"}}`)
	emptyURL := write("empty.json", `{"nats": {"url": ""}}`)
	noURL := write("none.json", `{"jobs": {"default_priority": 1}}`)
	for _, c := range []struct {
		name  string
		args  []string
		env   map[string]string
		given bool
	}{
		{"nothing", nil, nil, false},
		{"a file without a URL", []string{"--config", noURL}, nil, false},
		{"a file with an empty URL", []string{"--config", emptyURL}, nil, false},
		{"a file with the default URL", []string{"--config", withURL}, nil, true},
		{"the environment", nil, map[string]string{EnvNATSURL: "nats://env:1"}, true},
		{"the flag", []string{"--nats", "nats://flag:1"}, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			f := AddFlags(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := f.Load(func(k string) string { return c.env[k] }, nil)
			if err != nil {
				t.Fatal(err)
			}
			if f.NATSURLGiven() != c.given {
				t.Errorf("NATSURLGiven = %v, want %v", f.NATSURLGiven(), c.given)
			}
			if !c.given && cfg.NATS.URL != DefaultNATSURL {
				t.Errorf("nats.url %q without a URL given, want the default %q", cfg.NATS.URL, DefaultNATSURL)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f := AddFlags(fs)
	if err := fs.Parse([]string{"--config", filepath.Join(t.TempDir(), "absent.json")}); err != nil {
		t.Fatal(err)
	}
	_, err := f.Load(func(string) string { return "" }, nil)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "absent.json") {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseSecondsErrorsNameTheKey(t *testing.T) {
	cases := []struct{ name, json, key, problem string }{
		{"a word", `{"jobs": {"lease_duration": "soon"}}`, "jobs.lease_duration", `want a number of seconds, got "soon"`},
		{"a duration string", `{"jobs": {"refresh_interval": "60s"}}`, "jobs.refresh_interval", "number of seconds"},
		{"negative", `{"jobs": {"stale_timeout": -1}}`, "jobs.stale_timeout", "non-negative"},
		{"an array", `{"jobs": {"orphan_timeout": [1]}}`, "jobs.orphan_timeout", "number of seconds"},
		{"an object", `{"jobs": {"retry_backoff": {"s": 1}}}`, "jobs.retry_backoff", "number of seconds"},
		{"a boolean", `{"nats": {"ack_wait": true}}`, "nats.ack_wait", "number of seconds"},
		{"too large", `{"nats": {"ack_wait": 1e300}}`, "nats.ack_wait", "at most"},
		{"beyond float64", `{"nats": {"ack_wait": 1e400}}`, "nats.ack_wait", "number of seconds"},
		{"keys in another case", `{"JOBS": {"Lease_Duration": "soon"}}`, "jobs.lease_duration", "number of seconds"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.json))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%s) = %v, want ErrInvalid", c.json, err)
			}
			if !strings.Contains(err.Error(), c.key+": ") || !strings.Contains(err.Error(), c.problem) {
				t.Errorf("error %q should name the key %s and say %q", err, c.key, c.problem)
			}
		})
	}
}

func TestParseRejectsDuplicateKeys(t *testing.T) {
	cases := []struct{ name, json, key string }{
		{"a section", `{"jobs": {"max_attempts": 3}, "jobs": {"max_attempts": 5}}`, "jobs"},
		{"a key in a section", `{"jobs": {"max_attempts": 3, "max_attempts": 5}}`, "jobs.max_attempts"},
		{"the same value twice", `{"jobs": {"keep_completed": true, "keep_completed": true}}`, "jobs.keep_completed"},
		{"keys that differ in case", `{"mysql": {"dsn": "a@tcp(h:1)/", "DSN": "b@tcp(h:1)/"}}`, "mysql.dsn"},
		{"keys that fold alike (Kelvin sign)", `{"jobs": {"keep_completed": true, "\u212aeep_completed": false}}`, "jobs.keep_completed"},
		{"sections that differ in case", `{"nats": {"url": "nats://a:1"}, "NATS": {"replicas": 3}}`, "nats"},
		{"a key of a table", `{"tables": [{"table": "a.b"}, {"table": "a.c", "key_source": "SELECT 1", "key_source": "SELECT 2"}]}`, "tables[1].key_source"},
		{"a table's name", `{"tables": [{"table": "a.b", "table": "a.c"}]}`, "tables[0].table"},
		{"a seconds key", `{"nats": {"ack_wait": 5, "ack_wait": 6}}`, "nats.ack_wait"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.json))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%s) = %v, want ErrInvalid", c.json, err)
			}
			if !strings.Contains(err.Error(), "key "+c.key+" ") || !strings.Contains(err.Error(), "twice") {
				t.Errorf("error %q should name the key %s and say it is given twice", err, c.key)
			}
		})
	}
	t.Run("a file read by Load", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jetjobs.json")
		if err := os.WriteFile(path, []byte(`{"jobs": {"max_attempts": 3, "max_attempts": 5}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		f := AddFlags(fs)
		if err := fs.Parse([]string{"--config", path}); err != nil {
			t.Fatal(err)
		}
		_, err := f.Load(func(string) string { return "" }, nil)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "jobs.max_attempts") || !strings.Contains(err.Error(), path) {
			t.Errorf("Load: %v", err)
		}
	})
}

// duplicateKey returns the first key given twice in one object of the JSON document data, as
// encoding/json matches keys (without regard to case), or "" when there is none or data is not
// one JSON document. It is written apart from the package's own check, over every object.
func duplicateKey(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func() (string, bool)
	walk = func() (string, bool) {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		switch tok {
		case json.Delim('{'):
			var keys []string
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return "", false
				}
				for _, seen := range keys {
					if strings.EqualFold(seen, k.(string)) {
						return k.(string), true
					}
				}
				keys = append(keys, k.(string))
				if dup, ok := walk(); dup != "" || !ok {
					return dup, ok
				}
			}
			_, err := dec.Token()
			return "", err == nil
		case json.Delim('['):
			for dec.More() {
				if dup, ok := walk(); dup != "" || !ok {
					return dup, ok
				}
			}
			_, err := dec.Token()
			return "", err == nil
		}
		return "", true
	}
	dup, _ := walk()
	return dup
}

// FuzzParse checks that no input panics, that every accepted configuration is valid and has
// no key given twice, and that an error about a value names its key.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"jobs": {"default_priority": 1, "stale_timeout": 1e3, "version_method": "git"}}`))
	f.Add([]byte(`{"tables": [{"table": "a.b", "key_source": "SELECT 1"}]}`))
	f.Add([]byte(`{"nats": {"ack_wait": 1e308}}`))
	f.Add([]byte(`{"jobs": {"lease_duration": "soon"}}`))
	f.Add([]byte(`{"jobs": {"max_attempts": 3, "max_attempts": 5}}`))
	f.Add([]byte(`{"tables": [{"table": "a.b", "TABLE": "a.c"}]}`))
	f.Add([]byte(`{"nats": {"ack_wait": -1, "Ack_Wait": 2}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			// A value's error names its key first ("jobs.lease_duration: want …", "key …"):
			// "want …" straight after the sentinel is a value error that names no key.
			if msg := err.Error(); strings.HasPrefix(msg, ErrInvalid.Error()+": want") {
				t.Fatalf("error names no key: %v", err)
			}
			return
		}
		if dup := duplicateKey(data); dup != "" {
			t.Fatalf("accepted a configuration that gives the key %q twice: %s", dup, data)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted an invalid configuration: %v", err)
		}
		if cfg.Jobs.StaleTimeout < 0 || cfg.Jobs.LeaseDuration.Duration() < time.Second {
			t.Fatalf("out of range durations accepted: %+v", cfg.Jobs)
		}
	})
}
