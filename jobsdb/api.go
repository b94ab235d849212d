package jobsdb

// API CONTRACT STUB. Written first so that every package can compile against it; the jobsdb
// implementation replaces the bodies (and may move the declarations into other files of this
// package), keeping the exported names and signatures. Additions are fine; changes to these
// signatures must be agreed with the callers (worker, scheduler, jobsctl).

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Status is a job's state. The state machine is in DESIGN.md (States and transitions).
type Status string

// The statuses, as the values of DataJoint's status enum.
const (
	StatusPending  Status = "pending"
	StatusReserved Status = "reserved"
	StatusSuccess  Status = "success"
	StatusError    Status = "error"
	StatusIgnore   Status = "ignore"
)

// Sentinel errors, tested with errors.Is.
var (
	// ErrUnknownTable: the target table does not exist.
	ErrUnknownTable = errors.New("unknown table")
	// ErrNoKeyColumns: the target's primary key has no FK-derived column and no key source is configured.
	ErrNoKeyColumns = errors.New("no FK-derived primary key columns")
	// ErrBadKey: a key (or key restriction, or target row) has missing, extra or mistyped columns.
	ErrBadKey = errors.New("bad key")
	// ErrLeaseLost: a write by a lease holder found the lease taken over; nothing changed.
	ErrLeaseLost = errors.New("lease lost")
	// ErrNotFound: no job row for the key.
	ErrNotFound = errors.New("job not found")
	// ErrNoJobsTable: the jobs table does not exist yet (run refresh, or Declare).
	ErrNoJobsTable = errors.New("jobs table does not exist")
)

// Open opens a pool for dsn (go-sql-driver form) with the options jetjobs needs
// (parseTime, interpolateParams) unless the DSN sets them, and checks the connection.
func Open(ctx context.Context, dsn string) (*sql.DB, error) { panic("jobsdb: not implemented") }

// Column is one column of a target table.
type Column struct {
	Name       string // column name
	DataType   string // information_schema DATA_TYPE, e.g. "int", "varchar", "enum"
	ColumnType string // information_schema COLUMN_TYPE, e.g. "int(10) unsigned", "enum('a','b')"
	Nullable   bool
}

// Target is a target table and its jobs table, read from information_schema.
type Target struct {
	Schema     string   // database of the target and of its jobs table
	Name       string   // target table name, e.g. "__analysis"
	Columns    []Column // all columns of the target, in ordinal order
	PrimaryKey []string // the target's primary key columns, in order
	KeyColumns []Column // the key: FK-derived primary key columns, in primary key order
	JobsName   string   // "~~" + Name without leading underscores
	KeySource  string   // the SELECT producing the key columns (configured or derived)
}

// FullName is "schema.table".
func (t *Target) FullName() string { return t.Schema + "." + t.Name }

// Inspect reads the target table "schema.table" from information_schema. keySource, when not
// empty, is the configured key source SQL; otherwise the key source is derived from the
// primary parents.
func Inspect(ctx context.Context, db *sql.DB, table, keySource string) (*Target, error) {
	panic("jobsdb: not implemented")
}

// Key holds a job's key values in the order of Target.KeyColumns, as SQL-ready values.
type Key []any

// ParseKey decodes a JSON object of key columns, strictly: missing, extra or mistyped columns
// are ErrBadKey.
func (t *Target) ParseKey(data []byte) (Key, error) { panic("jobsdb: not implemented") }

// KeyFromStrings builds a key from column=value text, as given on a command line.
func (t *Target) KeyFromStrings(values map[string]string) (Key, error) {
	panic("jobsdb: not implemented")
}

// KeyJSON encodes k as a JSON object with the columns in key order (canonical: equal keys give
// equal bytes).
func (t *Target) KeyJSON(k Key) ([]byte, error) { panic("jobsdb: not implemented") }

// KeyMap returns k as column → JSON-ready value, for display and for handlers.
func (t *Target) KeyMap(k Key) map[string]any { panic("jobsdb: not implemented") }

// Restriction narrows an operation to some keys: a trusted SQL condition on key columns (as
// DataJoint's string restrictions) and/or column=value pairs (parameterized, columns checked).
type Restriction struct {
	SQL   string
	Equal map[string]any
}

// Identity is written into a job at reservation (DataJoint's user, host, pid, version);
// connection_id is taken from the reserving connection.
type Identity struct {
	User    string
	Host    string
	PID     int
	Version string
}

// Options configure a Jobs handle.
type Options struct {
	KeepCompleted bool          // completion marks 'success' instead of deleting
	LeaseDuration time.Duration // lease length set at reservation and renewed by Heartbeat
	Identity      Identity
}

// Jobs is the jobs table of one target.
type Jobs struct{}

// New returns the handle for t's jobs table; it does not touch the database.
func New(db *sql.DB, t *Target, opts Options) *Jobs { panic("jobsdb: not implemented") }

// Target returns the target the handle was made for.
func (j *Jobs) Target() *Target { panic("jobsdb: not implemented") }

// Declare creates the jobs table with DataJoint's DDL plus the jetjobs columns, or adopts an
// existing one by adding the missing jetjobs columns. Never drops.
func (j *Jobs) Declare(ctx context.Context) error { panic("jobsdb: not implemented") }

// RefreshOptions are DataJoint's refresh() arguments.
type RefreshOptions struct {
	Restrictions  []Restriction
	Delay         time.Duration // scheduled_time = now + Delay (may be negative)
	Priority      int
	StaleTimeout  time.Duration // 0 disables stale removal
	OrphanTimeout time.Duration // 0 disables recovery of lease-less (DataJoint) reservations
}

// RefreshResult is DataJoint's refresh() dictionary.
type RefreshResult struct {
	Added    int64 `json:"added"`
	Removed  int64 `json:"removed"`
	Orphaned int64 `json:"orphaned"`
	RePended int64 `json:"re_pended"`
}

// Refresh declares the jobs table if needed and brings it in step with the key source.
func (j *Jobs) Refresh(ctx context.Context, opts RefreshOptions) (RefreshResult, error) {
	panic("jobsdb: not implemented")
}

// Lease is a reservation held by this process.
type Lease struct {
	Key           Key
	Token         string // lease_token written at reservation
	Attempts      int    // attempts after this reservation (1 for the first)
	Priority      int
	ScheduledTime time.Time
	ReservedTime  time.Time
}

// Reserve reserves the given keys in one guarded statement and returns the leases won; keys
// that are not pending and due are skipped.
func (j *Jobs) Reserve(ctx context.Context, keys []Key) ([]Lease, error) {
	panic("jobsdb: not implemented")
}

// Heartbeat renews the leases and returns those that were lost (taken over or deleted).
func (j *Jobs) Heartbeat(ctx context.Context, leases []Lease) (lost []Lease, err error) {
	panic("jobsdb: not implemented")
}

// OutcomeKind is how a reserved job ended.
type OutcomeKind int

// The outcomes of a reserved job.
const (
	OutcomeSuccess OutcomeKind = iota // deleted, or 'success' with keep_completed
	OutcomeError                      // 'error' with message and stack
	OutcomeRetry                      // back to pending, due after RetryAfter
	OutcomeRelease                    // back to pending, due now (interrupted, not failed)
)

// Row is one target row to insert with a successful completion; key columns are filled in
// from the job's key when absent.
type Row map[string]any

// Outcome is the result of running one reserved job.
type Outcome struct {
	Lease      Lease
	Kind       OutcomeKind
	Duration   time.Duration
	Message    string        // OutcomeError: truncated to 2047 with "...truncated"
	Stack      string        // OutcomeError: stored in DataJoint's blob encoding
	RetryAfter time.Duration // OutcomeRetry
	Rows       []Row         // OutcomeSuccess: target rows inserted in the same transaction
}

// Record writes outcomes in one transaction, each fenced by its lease token. applied[i] is
// false when outcome i's lease was taken over (nothing was written for it).
func (j *Jobs) Record(ctx context.Context, outcomes []Outcome) (applied []bool, err error) {
	panic("jobsdb: not implemented")
}

// RecordTx is Record inside the caller's transaction (the caller commits).
func (j *Jobs) RecordTx(ctx context.Context, tx *sql.Tx, outcomes []Outcome) (applied []bool, err error) {
	panic("jobsdb: not implemented")
}

// RecoverExpired returns expired reservations to pending by UPDATE (priority, attempts and
// history kept): leases past lease_expires, and lease-less (DataJoint) reservations older
// than orphanTimeout when it is > 0.
func (j *Jobs) RecoverExpired(ctx context.Context, orphanTimeout time.Duration) (int64, error) {
	panic("jobsdb: not implemented")
}

// Ignore marks key as ignore, inserting a row if there is none (DataJoint semantics).
func (j *Jobs) Ignore(ctx context.Context, key Key) error { panic("jobsdb: not implemented") }

// Filter selects jobs for Delete, RetryErrors and List.
type Filter struct {
	Statuses     []Status // empty: any status
	Restrictions []Restriction
	MaxPriority  *int // only priority <= *MaxPriority
	DueOnly      bool // only scheduled_time <= now
	Limit        int  // List only; 0 = no limit
}

// Delete deletes the jobs matching f and returns how many.
func (j *Jobs) Delete(ctx context.Context, f Filter) (int64, error) { panic("jobsdb: not implemented") }

// RetryErrors moves error jobs matching f back to pending, due now.
func (j *Jobs) RetryErrors(ctx context.Context, f Filter) (int64, error) {
	panic("jobsdb: not implemented")
}

// Drop drops the jobs table.
func (j *Jobs) Drop(ctx context.Context) error { panic("jobsdb: not implemented") }

// Progress is DataJoint's progress() dictionary.
type Progress struct {
	Pending  int64 `json:"pending"`
	Reserved int64 `json:"reserved"`
	Success  int64 `json:"success"`
	Error    int64 `json:"error"`
	Ignore   int64 `json:"ignore"`
	Total    int64 `json:"total"`
}

// Progress counts jobs per status (all zero when the jobs table does not exist).
func (j *Jobs) Progress(ctx context.Context) (Progress, error) { panic("jobsdb: not implemented") }

// Job is one row of the jobs table.
type Job struct {
	Key            Key
	Status         Status
	Priority       int
	CreatedTime    time.Time
	ScheduledTime  time.Time
	ReservedTime   *time.Time
	CompletedTime  *time.Time
	Duration       *float64 // seconds
	ErrorMessage   string
	ErrorStack     string // decoded; filled by Get only
	User           string
	Host           string
	PID            int
	ConnectionID   int64
	Version        string
	Attempts       int
	LeaseExpires   *time.Time
	DispatchedTime *time.Time
}

// List returns jobs matching f ordered by priority, then scheduled_time, then key.
func (j *Jobs) List(ctx context.Context, f Filter) ([]Job, error) { panic("jobsdb: not implemented") }

// FetchPending returns due pending jobs in the order workers take them.
func (j *Jobs) FetchPending(ctx context.Context, limit int, maxPriority *int, restrictions []Restriction) ([]Job, error) {
	panic("jobsdb: not implemented")
}

// Get reads one job with its decoded error stack; ErrNotFound when there is no row.
func (j *Jobs) Get(ctx context.Context, key Key) (Job, error) { panic("jobsdb: not implemented") }

// DueForDispatch returns up to limit due pending jobs that need a publish: never published
// since they became pending (dispatched_time NULL), or published longer ago than
// redispatchAfter (their message may be lost). Ordered by priority, scheduled_time.
func (j *Jobs) DueForDispatch(ctx context.Context, limit int, redispatchAfter time.Duration) ([]Job, error) {
	panic("jobsdb: not implemented")
}

// MarkDispatched sets dispatched_time = now for the keys that are still pending.
func (j *Jobs) MarkDispatched(ctx context.Context, keys []Key) error {
	panic("jobsdb: not implemented")
}

// NextDue returns the earliest scheduled_time of pending jobs that are not yet due.
func (j *Jobs) NextDue(ctx context.Context) (t time.Time, ok bool, err error) {
	panic("jobsdb: not implemented")
}

// EncodeStack encodes s in DataJoint's blob encoding (compressed above 1000 bytes when smaller).
func EncodeStack(s string) []byte { panic("jobsdb: not implemented") }

// DecodeStack decodes DataJoint's blob encoding of a string, or returns plain text as is.
func DecodeStack(b []byte) (string, error) { panic("jobsdb: not implemented") }
