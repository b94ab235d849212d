package ctl

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// Output formats (-o).
const (
	formatText = "text" // aligned tables and sentences for people
	formatJSON = "json" // indented JSON, stable snake_case keys
	formatCSV  = "csv"  // RFC 4180, a header row of the same names as the JSON keys
)

var formats = []string{formatText, formatJSON, formatCSV}

// Layouts of times.
const (
	// textTimeLayout is how people see times, in the local time zone.
	textTimeLayout = "2006-01-02 15:04:05"
	// machineTimeLayout is RFC 3339 in UTC with the milliseconds the jobs table keeps.
	machineTimeLayout = "2006-01-02T15:04:05.000Z07:00"
	// maxMessageWidth is how many characters of an error message fit a text table cell; -o json
	// and -o csv carry the whole message, show prints it with the stack.
	maxMessageWidth = 100
)

// column is one output field. name is the contract with scripts: the JSON key and the CSV
// header, snake_case, never renamed.
type column struct {
	name string // JSON key and CSV header
	head string // header of text tables; "" leaves the field out of text tables
	doc  string // what the field holds, for help
}

// records are rows of values with the same columns. A value is one of: string, bool, int,
// int64, uint64, float64, time.Time, *time.Time, seconds, keyCell, message, idCell, rateCell,
// etaCell.
type records struct {
	cols []column
	rows [][]any
}

func (r *records) add(values ...any) {
	if len(values) != len(r.cols) {
		panic(fmt.Sprintf("ctl: record of %d values for %d columns", len(values), len(r.cols)))
	}
	r.rows = append(r.rows, values)
}

// object returns row i as an ordered JSON object.
func (r *records) object(i int) object {
	o := make(object, len(r.cols))
	for j, c := range r.cols {
		o[j] = member{c.name, jsonValue(r.rows[i][j])}
	}
	return o
}

// objects returns every row as an ordered JSON object (an empty array, never null).
func (r *records) objects() []object {
	out := make([]object, len(r.rows))
	for i := range r.rows {
		out[i] = r.object(i)
	}
	return out
}

// seconds is a duration in seconds that may be missing (a NULL duration column).
type seconds struct {
	v  float64
	ok bool
}

func secondsOf(p *float64) seconds {
	if p == nil {
		return seconds{}
	}
	return seconds{*p, true}
}

// keyCell is a job's key: "k=v,k=v" for people, a JSON object for machines (compact JSON in CSV).
type keyCell struct {
	text string
	json json.RawMessage
}

// message is an error message: its first line, shortened, in text tables; whole elsewhere.
type message string

// idCell is a process or connection id; 0 means none (DataJoint's default) and shows as "-"
// to people, 0 to machines.
type idCell int64

// rateCell is a rate in jobs per second, unknown until two samples exist.
type rateCell struct {
	v  float64
	ok bool
}

// etaCell is the estimated time until no job is left; unknown without a rate.
type etaCell struct {
	d  time.Duration
	ok bool
}

// textValue renders v for people.
func textValue(v any, loc *time.Location) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return oneLine(x, 0)
	case message:
		if x == "" {
			return "-"
		}
		return oneLine(string(x), maxMessageWidth)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.In(loc).Format(textTimeLayout)
	case *time.Time:
		if x == nil {
			return "-"
		}
		return x.In(loc).Format(textTimeLayout)
	case seconds:
		if !x.ok {
			return "-"
		}
		return humanSeconds(x.v)
	case keyCell:
		return oneLine(x.text, 0)
	case idCell:
		if x == 0 {
			return "-"
		}
		return strconv.FormatInt(int64(x), 10)
	case rateCell:
		if !x.ok {
			return "-"
		}
		return strconv.FormatFloat(x.v, 'f', 1, 64) + "/s"
	case etaCell:
		if !x.ok {
			return "-"
		}
		return humanDuration(x.d)
	default:
		return fmt.Sprint(x)
	}
}

// jsonValue turns v into what encoding/json writes for machines.
func jsonValue(v any) any {
	switch x := v.(type) {
	case time.Time:
		return machineTime(x)
	case *time.Time:
		if x == nil {
			return nil
		}
		return machineTime(*x)
	case seconds:
		if !x.ok {
			return nil
		}
		return x.v
	case keyCell:
		return x.json
	case message:
		return string(x)
	case idCell:
		return int64(x)
	case rateCell:
		if !x.ok {
			return nil
		}
		return roundTo(x.v, 3)
	case etaCell:
		if !x.ok {
			return nil
		}
		return roundTo(x.d.Seconds(), 0)
	default:
		return x
	}
}

// csvValue renders v for a CSV cell: as in JSON, with "" for null and compact JSON for keys.
func csvValue(v any) string {
	switch x := jsonValue(v).(type) {
	case nil:
		return ""
	case string:
		return x
	case json.RawMessage:
		return string(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return fmt.Sprint(x)
	}
}

func machineTime(t time.Time) string { return t.UTC().Format(machineTimeLayout) }

func roundTo(f float64, digits int) float64 {
	s := strconv.FormatFloat(f, 'f', digits, 64)
	r, _ := strconv.ParseFloat(s, 64)
	return r
}

// humanSeconds shows a duration in seconds with millisecond precision below a minute.
func humanSeconds(s float64) string {
	if s < 60 {
		return strconv.FormatFloat(s, 'f', 3, 64) + "s"
	}
	return humanDuration(time.Duration(s * float64(time.Second)))
}

// humanDuration shows d to the second: 45s, 3m20s, 2h5m0s.
func humanDuration(d time.Duration) string {
	if d < time.Second {
		return "0s"
	}
	return d.Round(time.Second).String()
}

// oneLine makes s safe for one table cell: control characters (which could also move a
// terminal's cursor) become spaces or are dropped, and s is cut to width characters (0: no cut).
func oneLine(s string, width int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t' || r == '\r':
			r = ' '
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			continue
		}
		if width > 0 && n == width {
			return strings.TrimRight(b.String(), " ") + "…"
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// safeText keeps newlines and tabs (a stack trace) but drops other control characters.
func safeText(s string) string {
	if !strings.ContainsFunc(s, isUnsafe) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isUnsafe(r) {
			return -1
		}
		return r
	}, s)
}

func isUnsafe(r rune) bool {
	if r == '\n' || r == '\t' {
		return false
	}
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError
}

// writeTable writes the text columns of r aligned, with a header row unless noHeaders.
func writeTable(w io.Writer, r *records, noHeaders bool, loc *time.Location) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var shown []int
	for i, c := range r.cols {
		if c.head != "" {
			shown = append(shown, i)
		}
	}
	line := make([]string, len(shown))
	if !noHeaders {
		for k, i := range shown {
			line[k] = r.cols[i].head
		}
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	for _, row := range r.rows {
		for k, i := range shown {
			line[k] = textValue(row[i], loc)
		}
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	return tw.Flush()
}

// writeCSV writes every column of r, with a header row unless noHeaders.
func writeCSV(w io.Writer, r *records, noHeaders bool) error {
	cw := csv.NewWriter(w)
	if !noHeaders {
		head := make([]string, len(r.cols))
		for i, c := range r.cols {
			head[i] = c.name
		}
		cw.Write(head)
	}
	line := make([]string, len(r.cols))
	for _, row := range r.rows {
		for i, v := range row {
			line[i] = csvValue(v)
		}
		cw.Write(line)
	}
	cw.Flush()
	return cw.Error()
}

// writeJSON writes v indented, without HTML escaping (messages keep their '<' and '&').
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONLine writes v as one compact line (watch -o json: one object per table and update).
func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// object is a JSON object that keeps its members in order, so output is stable.
type object []member

type member struct {
	name  string
	value any
}

// MarshalJSON writes the members in order.
func (o object) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	out := []byte{'{'}
	for i, m := range o {
		if i > 0 {
			out = append(out, ',')
		}
		buf.Reset()
		if err := enc.Encode(m.name); err != nil {
			return nil, err
		}
		out = append(out, bytes.TrimSpace(buf.Bytes())...)
		out = append(out, ':')
		buf.Reset()
		if err := enc.Encode(m.value); err != nil {
			return nil, fmt.Errorf("field %s: %w", m.name, err)
		}
		out = append(out, bytes.TrimSpace(buf.Bytes())...)
	}
	return append(out, '}'), nil
}

// render writes r in the session's format: a text table, CSV, or (JSON) the value json
// returns, since the JSON shape differs between commands (an array, an object keyed by table).
func (s *session) render(r *records, json func() any) error {
	switch s.g.output {
	case formatJSON:
		return writeJSON(s.env.Stdout, json())
	case formatCSV:
		return writeCSV(s.env.Stdout, r, s.g.noHeaders)
	default:
		return writeTable(s.env.Stdout, r, s.g.noHeaders, s.env.Location)
	}
}
