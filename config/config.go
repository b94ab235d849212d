// Package config loads the configuration shared by the scheduler, the worker and jobsctl.
//
// Sources, each overriding the one before: defaults, a JSON file (--config or JETJOBS_CONFIG),
// environment variables (JETJOBS_MYSQL_DSN, JETJOBS_NATS_URL), then flags (--mysql, --nats).
// Unknown keys, keys given twice and bad values are errors that name the key.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/worker"
)

// Defaults. The jobs defaults are DataJoint's (config.jobs.*) where DataJoint has the key.
// Where a library has the same setting, the default is the library's.
const (
	DefaultMySQLDSN        = "root@tcp(127.0.0.1:3306)/"
	DefaultNATSURL         = nats.DefaultURL
	DefaultSubjectPrefix   = queue.DefaultPrefix
	DefaultReplicas        = queue.DefaultReplicas
	DefaultAckWait         = queue.DefaultAckWait
	DefaultPriority        = jobsdb.PriorityDefault
	DefaultStaleTimeout    = 3600 * time.Second
	DefaultKeepCompleted   = false
	DefaultAutoRefresh     = true
	DefaultVersionMethod   = VersionNone
	DefaultOrphanTimeout   = 0 * time.Second
	DefaultLeaseDuration   = jobsdb.LeaseDurationDefault
	DefaultMaxAttempts     = worker.MaxAttemptsDefault
	DefaultRetryBackoff    = worker.RetryBackoffDefault
	DefaultRefreshInterval = jobsdb.RefreshIntervalDefault
	DefaultMaxOpenConns    = jobsdb.MaxOpenConnsDefault
	DefaultStorage         = string(queue.StorageDefault)
	DefaultDispatchWindow  = queue.WindowDefault
	DefaultRecordBatch     = worker.RecordBatchDefault
	DefaultRecordDelay     = worker.RecordDelayDefault
	DefaultDispatch        = string(worker.DispatchAuto)
	DefaultEvents          = true
	DefaultEventsCoalesce  = 5 * time.Millisecond
)

// maxRecordBatch bounds jobs.record_batch: a transaction of more outcomes holds more locks
// for longer and gains nothing (jobsdb splits statements at 1,000 keys anyway).
const maxRecordBatch = 10000

// Version methods for jobs.version_method.
const (
	VersionNone = "none"
	VersionGit  = "git"
)

// Environment variables read by Load.
const (
	EnvConfig   = "JETJOBS_CONFIG"
	EnvMySQLDSN = "JETJOBS_MYSQL_DSN"
	EnvNATSURL  = "JETJOBS_NATS_URL"
)

// ErrInvalid marks every configuration error, so programs can exit with the usage code (2).
var ErrInvalid = errors.New("invalid configuration")

// Config is the whole configuration of the jetjobs programs.
type Config struct {
	// Dispatch is how workers learn which jobs are due: "nats" (messages from JetStream),
	// "mysql" (claimed from the jobs tables; no NATS at all) or "auto" (NATS while it is
	// reachable, MySQL while it is not). The scheduler and the workers read it. Default
	// DefaultDispatch.
	Dispatch string `json:"dispatch"`

	MySQL  MySQL   `json:"mysql"`
	NATS   NATS    `json:"nats"`
	Jobs   Jobs    `json:"jobs"`
	Tables []Table `json:"tables"`
}

// MySQL is the connection to the database that holds the target and jobs tables.
type MySQL struct {
	// DSN in go-sql-driver form, e.g. "root@tcp(127.0.0.1:3306)/". Default DefaultMySQLDSN.
	DSN string `json:"dsn"`
	// MaxOpenConns is the most connections a program keeps to MySQL: 2–4× the database's
	// cores keeps it busy without queueing statements inside it. Default DefaultMaxOpenConns.
	MaxOpenConns int `json:"max_open_conns"`
}

// NATS is the connection to the NATS server with JetStream that dispatches due jobs.
type NATS struct {
	// URL of the server(s), comma-separated. Default DefaultNATSURL. The scheduler's
	// --embedded-nats replaces it with an in-process server.
	URL string `json:"url"`
	// Credentials is a NATS .creds file (JWT and nkey seed). Empty: no credentials.
	Credentials string `json:"credentials"`
	// TLSCA is a PEM file of CAs used to verify the server. Empty: the system roots.
	TLSCA string `json:"tls_ca"`
	// TLSCert and TLSKey are a PEM client certificate and key for mutual TLS.
	TLSCert string `json:"tls_cert"`
	TLSKey  string `json:"tls_key"`
	// SubjectPrefix starts every subject: <prefix>.<schema>.<table>.p<priority>.
	// Default DefaultSubjectPrefix.
	SubjectPrefix string `json:"subject_prefix"`
	// Replicas of each stream: 1 for a single server, 3 for a cluster. Default DefaultReplicas.
	Replicas int `json:"replicas"`
	// AckWait is how long a fetched message stays invisible before JetStream redelivers it;
	// workers send InProgress every AckWait/3 while a job runs. Default DefaultAckWait.
	AckWait Seconds `json:"ack_wait"`
	// Storage of each stream, "file" or "memory", decided by the scheduler: memory costs the
	// server less per message and loses the messages when it restarts (the scheduler then
	// publishes every due job again at once). Default DefaultStorage.
	Storage string `json:"storage"`
	// DispatchWindow is the most messages the scheduler keeps in a table's stream; within
	// it, the window follows the workers' slots. Default DefaultDispatchWindow.
	DispatchWindow int `json:"dispatch_window"`
}

// Jobs holds DataJoint's config.jobs keys and jetjobs' own job settings.
type Jobs struct {
	// DefaultPriority of new jobs; lower is more urgent, -128..127 (the column is a signed
	// tinyint). Default 5, as DataJoint.
	DefaultPriority int `json:"default_priority"`
	// StaleTimeout: pending jobs created longer ago than this are checked by refresh and
	// removed when their key left the key source or reached the target. 0 disables.
	// Default 3600 s, as DataJoint.
	StaleTimeout Seconds `json:"stale_timeout"`
	// KeepCompleted keeps finished jobs as status 'success' instead of deleting them.
	// Default false, as DataJoint.
	KeepCompleted bool `json:"keep_completed"`
	// AutoRefresh makes the scheduler refresh every RefreshInterval. Default true.
	AutoRefresh bool `json:"auto_refresh"`
	// VersionMethod fills the version column: "none" (or null) or "git" (git rev-parse
	// --short HEAD, evaluated once per process). Default "none".
	VersionMethod string `json:"version_method"`
	// OrphanTimeout recovers jobs reserved by DataJoint itself (no lease) whose reserved_time
	// is older than this. jetjobs' own reservations expire by their lease. 0 disables, as
	// DataJoint's default. Default 0.
	OrphanTimeout Seconds `json:"orphan_timeout"`
	// LeaseDuration is how long a reservation lives without a heartbeat; workers renew it
	// every LeaseDuration/3. Shorter recovers crashed workers sooner, at more heartbeat
	// writes. Default 60 s.
	LeaseDuration Seconds `json:"lease_duration"`
	// MaxAttempts is the number of reservations a job may use for retryable failures before
	// it is recorded as an error. Default 3.
	MaxAttempts int `json:"max_attempts"`
	// RetryBackoff is the base of the exponential retry delay (base·2^(attempt-1), with
	// jitter). Default 10 s.
	RetryBackoff Seconds `json:"retry_backoff"`
	// RefreshInterval is how often the scheduler refreshes each table from its key source
	// when AutoRefresh is on. Default 60 s.
	RefreshInterval Seconds `json:"refresh_interval"`
	// RecordBatch is the most outcomes a worker records in one transaction. Default
	// DefaultRecordBatch.
	RecordBatch int `json:"record_batch"`
	// RecordDelay is the longest a finished job waits for others to join its batch. Default
	// DefaultRecordDelay.
	RecordDelay Seconds `json:"record_delay"`
	// Events makes the scheduler follow notifies and inserts (package notify): the keys they
	// name, and the keys of jobs completed upstream, are refreshed at once. Default true.
	Events bool `json:"events"`
	// EventsCoalesce is the shortest time between two refreshes of a table for events; the
	// keys told meanwhile go together into the next one. Default 0.005 (5 ms).
	EventsCoalesce Seconds `json:"events_coalesce"`
}

// Table is one target table.
type Table struct {
	// Table is "schema.table", the target whose rows are computed.
	Table string `json:"table"`
	// KeySource is an optional SQL SELECT returning the key columns. Empty: derived from the
	// target's primary parents, as DataJoint does.
	KeySource string `json:"key_source,omitempty"`
	// DataJoint is the DataJoint class that computes the table, "module.Class" as Python
	// imports it (e.g. "lab_pipeline.Analysis"): workers compute the table with DataJoint's
	// own make(), through the Python package's adapter (python3 -m jetjobs.datajoint),
	// kept running once per slot. Empty: workers run their --exec handler.
	DataJoint string `json:"datajoint,omitempty"`
	// DependsOn names the tables ("schema.table") a configured KeySource reads: rows inserted
	// there, among them the jobs completed there, refresh this table at once for their keys
	// (matched to its key columns by name). Only with a key source: a derived one follows its
	// primary parents' foreign keys.
	DependsOn []string `json:"depends_on,omitempty"`
}

// dataJointClass is a Python module path and class name: identifiers joined by dots.
var dataJointClass = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)

// CheckDataJointClass checks that class names a DataJoint class as "module.Class".
func CheckDataJointClass(class string) error {
	if !dataJointClass.MatchString(class) {
		return fmt.Errorf("%q is not a DataJoint class as module.Class (Python identifiers joined by dots, e.g. lab_pipeline.Analysis)", class)
	}
	return nil
}

// Seconds is a duration written in configuration as a number of seconds, like DataJoint's
// stale_timeout.
type Seconds time.Duration

// Duration returns s as a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(s) }

// maxSeconds is the longest Seconds: a time.Duration's range, in whole seconds.
const maxSeconds = math.MaxInt64 / int64(time.Second)

// UnmarshalJSON reads a non-negative number of seconds. Parse and Load name the key of a
// value it refuses.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("want a number of seconds, got %s", b)
	}
	if f < 0 || math.IsNaN(f) {
		return fmt.Errorf("want a non-negative number of seconds, got %s", b)
	}
	if f > float64(maxSeconds) {
		return fmt.Errorf("want at most %d seconds, got %s", maxSeconds, b)
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

// MarshalJSON writes s as a number of seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(s).Seconds())
}

// Default returns the configuration with every default filled in.
func Default() Config {
	return Config{
		Dispatch: DefaultDispatch,
		MySQL:    MySQL{DSN: DefaultMySQLDSN, MaxOpenConns: DefaultMaxOpenConns},
		NATS: NATS{
			URL:            DefaultNATSURL,
			SubjectPrefix:  DefaultSubjectPrefix,
			Replicas:       DefaultReplicas,
			AckWait:        Seconds(DefaultAckWait),
			Storage:        DefaultStorage,
			DispatchWindow: DefaultDispatchWindow,
		},
		Jobs: Jobs{
			DefaultPriority: DefaultPriority,
			StaleTimeout:    Seconds(DefaultStaleTimeout),
			KeepCompleted:   DefaultKeepCompleted,
			AutoRefresh:     DefaultAutoRefresh,
			VersionMethod:   DefaultVersionMethod,
			OrphanTimeout:   Seconds(DefaultOrphanTimeout),
			LeaseDuration:   Seconds(DefaultLeaseDuration),
			MaxAttempts:     DefaultMaxAttempts,
			RetryBackoff:    Seconds(DefaultRetryBackoff),
			RefreshInterval: Seconds(DefaultRefreshInterval),
			RecordBatch:     DefaultRecordBatch,
			RecordDelay:     Seconds(DefaultRecordDelay),
			Events:          DefaultEvents,
			EventsCoalesce:  Seconds(DefaultEventsCoalesce),
		},
	}
}

// Parse reads a JSON configuration file's contents over the defaults and validates it.
func Parse(data []byte) (Config, error) {
	cfg := Default()
	if err := decodeInto(data, &cfg); err != nil {
		return Config{}, err
	}
	return cfg, cfg.Validate()
}

func decodeInto(data []byte, cfg *Config) error {
	if err := checkKeys(data, reflect.TypeOf(cfg).Elem(), ""); err != nil {
		return err
	}
	// version_method may be JSON null, as DataJoint's None.
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, describeJSONError(err))
	}
	if dec.More() {
		return fmt.Errorf("%w: unexpected data after the JSON object", ErrInvalid)
	}
	if cfg.Jobs.VersionMethod == "" {
		cfg.Jobs.VersionMethod = VersionNone
	}
	return nil
}

// describeJSONError turns encoding/json's messages into ones that name the configuration key.
func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("key %q: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown key " + rest + " (see the README for the keys of each section)"
	}
	if strings.HasPrefix(msg, "json: cannot unmarshal") {
		return strings.TrimPrefix(msg, "json: ")
	}
	// Errors from Seconds.UnmarshalJSON and syntax errors.
	return strings.TrimPrefix(msg, "json: ")
}

var secondsType = reflect.TypeFor[Seconds]()

// checkKeys walks the JSON value data as encoding/json decodes it into a value of type t and
// reports, naming the key's path (jobs.lease_duration, tables[1].key_source), what the decoder
// would let pass or report without the key: a key given twice in one object (encoding/json
// matches keys without regard to case and keeps the last), and a value Seconds refuses.
// Anything else (syntax, unknown keys, types) is left to the decoder.
func checkKeys(data []byte, t reflect.Type, path string) error {
	switch {
	case t == secondsType:
		var s Seconds
		if err := s.UnmarshalJSON(data); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
		}
	case t.Kind() == reflect.Struct:
		return checkObject(data, t, path)
	case t.Kind() == reflect.Slice:
		dec := json.NewDecoder(bytes.NewReader(data))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return nil
		}
		for i := 0; dec.More(); i++ {
			var elem json.RawMessage
			if err := dec.Decode(&elem); err != nil {
				return nil
			}
			if err := checkKeys(elem, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkObject is checkKeys of a JSON object decoded into the struct type t.
func checkObject(data []byte, t reflect.Type, path string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	given := map[int]string{} // field index → the key that set it
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil
		}
		i, name, ok := jsonField(t, key)
		if !ok {
			continue // an unknown key: the decoder names it
		}
		keyPath := name
		if path != "" {
			keyPath = path + "." + name
		}
		if first, twice := given[i]; twice {
			if first == key {
				return fmt.Errorf("%w: key %s is given twice: keep one (JSON would silently use the last)", ErrInvalid, keyPath)
			}
			return fmt.Errorf("%w: key %s is given twice, as %q and %q (keys match without regard to case): keep one", ErrInvalid, keyPath, first, key)
		}
		given[i] = key
		if err := checkKeys(value, t.Field(i).Type, keyPath); err != nil {
			return err
		}
	}
	return nil
}

// jsonField finds the field of struct type t that encoding/json decodes key into: its index
// and JSON name. Like encoding/json it prefers an exact match, then one without regard to case.
func jsonField(t reflect.Type, key string) (index int, name string, ok bool) {
	index = -1
	for i := range t.NumField() {
		f := t.Field(i)
		n, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if n == "" {
			n = f.Name
		}
		switch {
		case !f.IsExported() || n == "-":
		case n == key:
			return i, n, true
		case index < 0 && foldName(n) == foldName(key):
			index, name = i, n
		}
	}
	return index, name, index >= 0
}

// foldName maps s to one spelling of all the names encoding/json takes for it: every rune to
// the smallest rune of its case-folding orbit ("K", "k" and the Kelvin sign all to "K").
func foldName(s string) string {
	return strings.Map(func(r rune) rune {
		for {
			next := unicode.SimpleFold(r)
			if next <= r {
				return next
			}
			r = next
		}
	}, s)
}

// Validate checks every value's range and the table names.
func (c *Config) Validate() error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if c.MySQL.DSN == "" {
		bad("mysql.dsn is empty: give a go-sql-driver DSN such as %q", DefaultMySQLDSN)
	}
	if !worker.Dispatch(c.Dispatch).Valid() {
		bad("dispatch %q must be \"nats\", \"mysql\" or \"auto\"", c.Dispatch)
	}
	if c.NATS.SubjectPrefix == "" || strings.ContainsAny(c.NATS.SubjectPrefix, " \t*>") {
		bad("nats.subject_prefix %q must be non-empty without spaces, '*' or '>'", c.NATS.SubjectPrefix)
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		bad("nats.replicas %d must be 1..5", c.NATS.Replicas)
	}
	if c.NATS.AckWait.Duration() < time.Second {
		bad("nats.ack_wait %v must be at least 1 second", c.NATS.AckWait.Duration())
	}
	if c.Jobs.DefaultPriority < -128 || c.Jobs.DefaultPriority > 127 {
		bad("jobs.default_priority %d is out of range -128..127 (the priority column is a signed tinyint)", c.Jobs.DefaultPriority)
	}
	if c.Jobs.VersionMethod != VersionNone && c.Jobs.VersionMethod != VersionGit {
		bad("jobs.version_method %q must be \"none\", null or \"git\"", c.Jobs.VersionMethod)
	}
	if c.Jobs.LeaseDuration.Duration() < time.Second {
		bad("jobs.lease_duration %v must be at least 1 second", c.Jobs.LeaseDuration.Duration())
	}
	if c.Jobs.MaxAttempts < 1 {
		bad("jobs.max_attempts %d must be at least 1", c.Jobs.MaxAttempts)
	}
	if c.Jobs.RefreshInterval.Duration() < time.Second {
		bad("jobs.refresh_interval %v must be at least 1 second", c.Jobs.RefreshInterval.Duration())
	}
	if c.MySQL.MaxOpenConns < 1 {
		bad("mysql.max_open_conns %d must be at least 1", c.MySQL.MaxOpenConns)
	}
	if c.NATS.Storage != string(queue.StorageFile) && c.NATS.Storage != string(queue.StorageMemory) {
		bad("nats.storage %q must be %q or %q", c.NATS.Storage, queue.StorageFile, queue.StorageMemory)
	}
	if c.NATS.DispatchWindow < 1 {
		bad("nats.dispatch_window %d must be at least 1", c.NATS.DispatchWindow)
	}
	if c.Jobs.RecordBatch < 1 || c.Jobs.RecordBatch > maxRecordBatch {
		bad("jobs.record_batch %d must be 1..%d", c.Jobs.RecordBatch, maxRecordBatch)
	}
	if c.Jobs.EventsCoalesce.Duration() <= 0 || c.Jobs.EventsCoalesce.Duration() > time.Second {
		bad("jobs.events_coalesce %v must be more than 0 and at most 1 second", c.Jobs.EventsCoalesce.Duration())
	}
	if c.Jobs.RecordDelay.Duration() <= 0 || c.Jobs.RecordDelay.Duration() > time.Second {
		bad("jobs.record_delay %v must be more than 0 and at most 1 second", c.Jobs.RecordDelay.Duration())
	}
	seen := map[string]bool{}
	for i, t := range c.Tables {
		if _, _, err := SplitTable(t.Table); err != nil {
			bad("tables[%d].table: %v", i, err)
		}
		if seen[t.Table] {
			bad("tables[%d].table %q is listed twice", i, t.Table)
		}
		if t.DataJoint != "" {
			if err := CheckDataJointClass(t.DataJoint); err != nil {
				bad("tables[%d].datajoint: %v", i, err)
			}
		}
		if len(t.DependsOn) > 0 && strings.TrimSpace(t.KeySource) == "" {
			bad("tables[%d].depends_on is for a configured key_source: a derived key source follows the table's primary parents by itself", i)
		}
		for k, dep := range t.DependsOn {
			if _, _, err := SplitTable(dep); err != nil {
				bad("tables[%d].depends_on[%d]: %v", i, k, err)
			}
		}
		seen[t.Table] = true
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return nil
}

// SplitTable splits "schema.table" into its two names.
func SplitTable(name string) (schema, table string, err error) {
	schema, table, ok := strings.Cut(name, ".")
	if !ok || schema == "" || table == "" || strings.Contains(table, ".") {
		return "", "", fmt.Errorf("%q is not of the form schema.table", name)
	}
	return schema, table, nil
}

// Table returns the configured entry for name, and whether there is one.
func (c *Config) Table(name string) (Table, bool) {
	for _, t := range c.Tables {
		if t.Table == name {
			return t, true
		}
	}
	return Table{}, false
}

// TableNames lists the configured tables, for error messages and "all tables" commands.
func (c *Config) TableNames() []string {
	names := make([]string, len(c.Tables))
	for i, t := range c.Tables {
		names[i] = t.Table
	}
	return names
}

// Flags are the command-line flags every program shares.
type Flags struct {
	path     string
	mysql    string
	nats     string
	dispatch string // AddDispatchFlag

	natsGiven bool // by the last Load
}

// AddFlags registers --config, --mysql and --nats on fs.
func AddFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.path, "config", "", "JSON configuration file (env "+EnvConfig+")")
	fs.StringVar(&f.mysql, "mysql", "", "MySQL DSN in go-sql-driver form, e.g. "+DefaultMySQLDSN+" (env "+EnvMySQLDSN+"; default "+DefaultMySQLDSN+")")
	fs.StringVar(&f.nats, "nats", "", "NATS server URL (env "+EnvNATSURL+"; default "+DefaultNATSURL+")")
	return f
}

// AddDispatchFlag registers --dispatch on fs, for the programs that read it (the scheduler
// and the worker).
func (f *Flags) AddDispatchFlag(fs *pflag.FlagSet) {
	fs.StringVar(&f.dispatch, "dispatch", "", "how workers learn which jobs are due: nats (messages from JetStream), mysql (claimed from the jobs table, no NATS at all) or auto (NATS while it is reachable, MySQL while it is not); config key dispatch, default "+DefaultDispatch)
}

// NATSURLGiven reports whether the last Load found a NATS URL in the flags, the environment
// or the config file, rather than taking DefaultNATSURL. (The scheduler runs an embedded
// server when none was given.)
func (f *Flags) NATSURLGiven() bool { return f.natsGiven }

// Load builds the configuration: defaults, then the file, then the environment (getenv, nil
// for os.Getenv), then the flags; tables given as arguments are added to the configured ones.
func (f *Flags) Load(getenv func(string) string, tables []string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := Default()
	cfg.NATS.URL = "" // DefaultNATSURL unless a source gives one: see NATSURLGiven
	path := f.path
	if path == "" {
		path = getenv(EnvConfig)
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("%w: read config file: %v", ErrInvalid, err)
		}
		if err := decodeInto(data, &cfg); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if v := getenv(EnvMySQLDSN); v != "" {
		cfg.MySQL.DSN = v
	}
	if v := getenv(EnvNATSURL); v != "" {
		cfg.NATS.URL = v
	}
	if f.mysql != "" {
		cfg.MySQL.DSN = f.mysql
	}
	if f.nats != "" {
		cfg.NATS.URL = f.nats
	}
	if f.dispatch != "" {
		cfg.Dispatch = f.dispatch
	}
	f.natsGiven = cfg.NATS.URL != ""
	if !f.natsGiven {
		cfg.NATS.URL = DefaultNATSURL
	}
	for _, name := range tables {
		if _, ok := cfg.Table(name); !ok {
			cfg.Tables = append(cfg.Tables, Table{Table: name})
		}
	}
	return cfg, cfg.Validate()
}
