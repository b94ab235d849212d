package cli

import (
	"io"
	"log/slog"

	"github.com/go-sql-driver/mysql"
)

// LogLevels names the values of --log-level.
const LogLevels = "debug, info, warn or error"

// NewLogger returns the program's logger: text lines on w at level ("debug", "info", "warn" or
// "error"); an unknown level is a usage error.
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, Usagef("--log-level %q: want %s", level, LogLevels)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// RouteDriverLog sends the MySQL driver's own messages (a connection lost mid-packet, say)
// through log, at warning level. The driver's logger is a process global: only a program's
// main calls this, never a test that runs programs in parallel.
func RouteDriverLog(log *slog.Logger) {
	_ = mysql.SetLogger(slog.NewLogLogger(log.Handler().WithAttrs([]slog.Attr{slog.String("component", "mysql driver")}), slog.LevelWarn))
}
