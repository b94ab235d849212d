package jobsdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/go-sql-driver/mysql"
)

// Failure is what a database error means for whoever may retry the statement (see Classify).
// It is the one place where jetjobs interprets MySQL error numbers and connection errors.
type Failure int

// The kinds of failure.
const (
	// FailureNone: there was no error.
	FailureNone Failure = iota
	// FailureTransient: the statement did not take effect and may succeed when run again: a
	// deadlock or lock wait timeout, a statement interrupted (KILL QUERY) or past its time
	// limit, a connection that could not be made (refused, too many connections), a server
	// shutting down or read-only during a failover.
	FailureTransient
	// FailureAmbiguous: the connection broke (or the caller's deadline passed) after the
	// statement was sent: it may or may not have taken effect. Run it again only when it is
	// idempotent or its effect can be read back, as jetjobs' token-guarded writes can.
	FailureAmbiguous
	// FailureData: a value does not fit the table (out of range, too long, NULL, a duplicate
	// or a foreign key violation: SQLSTATE classes 22 and 23). The same rows fail again.
	FailureData
	// FailureSchema: a database, table, column or privilege is missing, or the SQL is wrong
	// (SQLSTATE classes 42, 3D and 28, access denied). Retrying cannot help; the
	// configuration or the schema must change.
	FailureSchema
	// FailureOther: anything else; treat it as permanent.
	FailureOther
)

func (f Failure) String() string {
	switch f {
	case FailureNone:
		return "none"
	case FailureTransient:
		return "transient"
	case FailureAmbiguous:
		return "ambiguous"
	case FailureData:
		return "data"
	case FailureSchema:
		return "schema"
	}
	return "other"
}

// MySQL and MariaDB error numbers by meaning.
var (
	// transientNumbers did not take effect (the statement or transaction was rolled back, or
	// never ran) and may succeed later.
	transientNumbers = map[uint16]bool{
		1040: true, // ER_CON_COUNT_ERROR: too many connections
		1047: true, // ER_UNKNOWN_COM_ERROR: a Galera node not ready yet (WSREP)
		1053: true, // ER_SERVER_SHUTDOWN: shutdown in progress
		1152: true, // ER_ABORTING_CONNECTION
		1158: true, // ER_NET_READ_ERROR
		1159: true, // ER_NET_READ_INTERRUPTED
		1160: true, // ER_NET_ERROR_ON_WRITE
		1161: true, // ER_NET_WRITE_INTERRUPTED
		1203: true, // ER_TOO_MANY_USER_CONNECTIONS
		1205: true, // ER_LOCK_WAIT_TIMEOUT
		1213: true, // ER_LOCK_DEADLOCK
		1226: true, // ER_USER_LIMIT_REACHED
		1290: true, // ER_OPTION_PREVENTS_STATEMENT: --read-only (a failover in progress)
		1317: true, // ER_QUERY_INTERRUPTED: KILL QUERY
		1614: true, // ER_XA_RBDEADLOCK
		1637: true, // ER_TOO_MANY_CONCURRENT_TRXS
		1792: true, // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
		1836: true, // ER_READ_ONLY_MODE
		1927: true, // ER_CONNECTION_KILLED (MariaDB): KILL CONNECTION
		1969: true, // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
		3024: true, // ER_QUERY_TIMEOUT (MySQL max_execution_time)
		4031: true, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
	}
	// dataNumbers are data errors whose SQLSTATE is the generic HY000.
	dataNumbers = map[uint16]bool{
		1265: true, // WARN_DATA_TRUNCATED (strict mode)
		1292: true, // ER_TRUNCATED_WRONG_VALUE
		1364: true, // ER_NO_DEFAULT_FOR_FIELD
		1366: true, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
		1367: true, // ER_ILLEGAL_VALUE_FOR_TYPE
		1411: true, // ER_WRONG_VALUE_FOR_TYPE
		3819: true, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL 8)
		4025: true, // ER_CONSTRAINT_FAILED (MariaDB CHECK)
	}
	// schemaNumbers need the configuration or the schema to change.
	schemaNumbers = map[uint16]bool{
		1044: true, // ER_DBACCESS_DENIED_ERROR
		1045: true, // ER_ACCESS_DENIED_ERROR
		1046: true, // ER_NO_DB_ERROR
		1049: true, // ER_BAD_DB_ERROR
		1052: true, // ER_NON_UNIQ_ERROR: ambiguous column in a key source
		1054: true, // ER_BAD_FIELD_ERROR
		1064: true, // ER_PARSE_ERROR
		1142: true, // ER_TABLEACCESS_DENIED_ERROR
		1143: true, // ER_COLUMNACCESS_DENIED_ERROR
		1146: true, // ER_NO_SUCH_TABLE
		1227: true, // ER_SPECIFIC_ACCESS_DENIED_ERROR
	}
)

// Classify tells what err means for a retry. Errors from MySQL are classified by number, then by
// SQLSTATE class; connection errors by whether the statement could have been sent: a refused
// or unused connection is transient, a connection that broke mid-statement (and a deadline
// that passed while a statement ran) is ambiguous.
func Classify(err error) Failure {
	if err == nil {
		return FailureNone
	}
	var te *transientError
	if errors.As(err, &te) {
		return FailureTransient
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return classifyMySQL(me)
	}
	var opErr *net.OpError
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone):
		// The driver says nothing was sent: database/sql may even have retried it already.
		return FailureTransient
	case errors.As(err, &opErr) && opErr.Op == "dial", errors.Is(err, syscall.ECONNREFUSED):
		return FailureTransient
	case errors.Is(err, mysql.ErrInvalidConn), errors.Is(err, mysql.ErrPktSync), errors.Is(err, mysql.ErrPktSyncMul),
		errors.Is(err, mysql.ErrBusyBuffer), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return FailureAmbiguous
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return FailureAmbiguous
	}
	return FailureOther
}

func classifyMySQL(me *mysql.MySQLError) Failure {
	switch {
	case transientNumbers[me.Number]:
		return FailureTransient
	case dataNumbers[me.Number]:
		return FailureData
	case schemaNumbers[me.Number]:
		return FailureSchema
	}
	switch string(me.SQLState[:2]) {
	case "08", "40": // connection exception, transaction rollback
		return FailureTransient
	case "22", "23": // data exception, integrity constraint violation
		return FailureData
	case "42", "3D", "28": // syntax or access rule, invalid catalog, invalid authorization
		return FailureSchema
	}
	return FailureOther
}

// IsBadSQL reports whether the server refused a statement's text: a syntax error, an unknown
// column or an ambiguous one. jobsdb writes its own statements correctly, so for a statement
// that carries trusted SQL from outside (a Restriction's condition, a configured key source)
// this means that SQL is wrong, and the person who wrote it must change it.
func IsBadSQL(err error) bool {
	switch mysqlErrorNumber(err) {
	case errParse, errBadField, errNonUniqueColumn:
		return true
	}
	return false
}

// MySQL error numbers that jobsdb reacts to itself, besides classifying them.
const (
	errNonUniqueColumn = 1052 // ER_NON_UNIQ_ERROR: an ambiguous column
	errBadField        = 1054 // ER_BAD_FIELD_ERROR: an unknown column
	errDupFieldName    = 1060 // ER_DUP_FIELDNAME: ALTER TABLE ADD of a column that exists
	errParse           = 1064 // ER_PARSE_ERROR
	errNoSuchTable     = 1146 // ER_NO_SUCH_TABLE
	errNoSuchIndex     = 1176 // ER_KEY_DOES_NOT_EXITS: an index hint names no index of the table
	errBinlogStmtMode  = 1665 // ER_BINLOG_STMT_MODE_AND_ROW_ENGINE: READ COMMITTED with a statement-based binary log
)

func mysqlErrorNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// isNoSuchTable reports MySQL's "table doesn't exist" about the table named name, or about any
// table when name is "".
func isNoSuchTable(err error, name string) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == errNoSuchTable && strings.Contains(me.Message, name)
}

// isUnknownColumn reports MySQL's "unknown column" about one of the columns names.
func isUnknownColumn(err error, names []string) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != errBadField {
		return false
	}
	for _, name := range names {
		if strings.Contains(me.Message, "'"+name+"'") {
			return true
		}
	}
	return false
}

// isNoSuchIndex reports an index hint naming an index the table does not have.
func isNoSuchIndex(err error) bool { return mysqlErrorNumber(err) == errNoSuchIndex }

// isDuplicateColumn reports an ALTER TABLE ADD COLUMN of a column that exists: another process
// added it first.
func isDuplicateColumn(err error) bool { return mysqlErrorNumber(err) == errDupFieldName }

// isBinlogRefusesReadCommitted reports that a statement-based binary log cannot record an
// INSERT … SELECT run at READ COMMITTED.
func isBinlogRefusesReadCommitted(err error) bool { return mysqlErrorNumber(err) == errBinlogStmtMode }

// IsTransient reports whether a statement that failed with err is worth running again later:
// a transient or an ambiguous failure (see Classify).
func IsTransient(err error) bool {
	switch Classify(err) {
	case FailureTransient, FailureAmbiguous:
		return true
	}
	return false
}

// IsAmbiguous reports whether a statement that failed with err may have taken effect.
func IsAmbiguous(err error) bool { return Classify(err) == FailureAmbiguous }
