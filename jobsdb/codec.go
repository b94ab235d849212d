package jobsdb

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// kind is how a key column's values are represented.
//
// Canonical Go values (the elements of a Key): int64 for signed integers and year, uint64
// for unsigned integers and bit, float64 for float and double (a float column's value is the
// float32 widened), string for decimal (fixed scale), char/varchar, enum, set, date, datetime,
// timestamp, time and MariaDB's uuid type, []byte for binary, varbinary and binary(16).
type kind int

const (
	kindInt kind = iota
	kindUint
	kindBit
	kindYear
	kindDecimal
	kindFloat
	kindString
	kindEnum
	kindSet
	kindDate
	kindDateTime
	kindTime
	kindBinary
	kindUUID       // binary(16): a UUID string in JSON (DataJoint's uuid type)
	kindNativeUUID // MariaDB's uuid type
)

// codec converts one key column's values between JSON, text, Go and MySQL, checking them
// against the column's type. Its errors are the problem only; Target wraps them in a KeyError.
type codec struct {
	name      string
	kind      kind
	min, max  int64  // kindInt
	umax      uint64 // kindUint, kindBit
	length    int    // kindString: characters; kindBinary: bytes
	fixed     bool   // char (trailing spaces dropped, as MySQL does) or binary (zero-padded)
	precision int    // kindDecimal
	scale     int    // kindDecimal
	unsigned  bool   // kindDecimal, kindFloat
	single    bool   // kindFloat: float (32-bit) rather than double
	fsp       int    // kindDateTime, kindTime: fractional-second digits
	members   []string
}

var intBits = map[string]uint{"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32, "bigint": 64}

// newCodec builds the codec of a column from its information_schema DATA_TYPE and
// COLUMN_TYPE.
func newCodec(col Column) (*codec, error) {
	ct := strings.ToLower(strings.TrimSpace(col.ColumnType))
	dt := strings.ToLower(strings.TrimSpace(col.DataType))
	c := &codec{name: col.Name, unsigned: strings.Contains(ct, " unsigned")}
	args := typeArgs(ct)
	switch dt {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint":
		bits := intBits[dt]
		if c.unsigned {
			c.kind, c.umax = kindUint, math.MaxUint64>>(64-bits)
		} else {
			c.kind, c.min, c.max = kindInt, math.MinInt64>>(64-bits), math.MaxInt64>>(64-bits)
		}
	case "bit":
		n := argInt(args, 0, 1)
		if n < 1 || n > 64 {
			return nil, fmt.Errorf("column %s: unexpected type %s", col.Name, col.ColumnType)
		}
		c.kind, c.umax = kindBit, math.MaxUint64>>(64-n)
	case "year":
		c.kind = kindYear
	case "decimal", "numeric", "dec", "fixed":
		c.kind, c.precision, c.scale = kindDecimal, argInt(args, 0, 10), argInt(args, 1, 0)
	case "float":
		c.kind, c.single = kindFloat, true
	case "double", "real", "double precision":
		c.kind = kindFloat
	case "char", "varchar":
		c.kind, c.length, c.fixed = kindString, argInt(args, 0, 1), dt == "char"
	case "binary", "varbinary":
		c.kind, c.length, c.fixed = kindBinary, argInt(args, 0, 1), dt == "binary"
		if c.fixed && c.length == 16 {
			c.kind = kindUUID
		}
	case "uuid":
		c.kind = kindNativeUUID
	case "enum", "set":
		members, err := parseMembers(col.ColumnType)
		if err != nil {
			return nil, fmt.Errorf("column %s: %s: %w", col.Name, col.ColumnType, err)
		}
		c.kind, c.members = kindEnum, members
		if dt == "set" {
			c.kind = kindSet
		}
	case "date":
		c.kind = kindDate
	case "datetime", "timestamp":
		c.kind, c.fsp = kindDateTime, argInt(args, 0, 0)
	case "time":
		c.kind, c.fsp = kindTime, argInt(args, 0, 0)
	default:
		return nil, fmt.Errorf("column %s: type %s is not supported in a key", col.Name, col.ColumnType)
	}
	return c, nil
}

// typeArgs returns the comma-separated arguments in the first parentheses of a column type,
// "decimal(10,2) unsigned" → ["10" "2"].
func typeArgs(ct string) []string {
	open := strings.IndexByte(ct, '(')
	end := strings.IndexByte(ct, ')')
	if open < 0 || end < open {
		return nil
	}
	return strings.Split(ct[open+1:end], ",")
}

func argInt(args []string, i, def int) int {
	if i >= len(args) {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(args[i]))
	if err != nil {
		return def
	}
	return n
}

// parseMembers reads the members of an enum(…) or set(…) column type as information_schema
// writes them: each member single-quoted, with quotes doubled and backslashes escaped.
func parseMembers(ct string) ([]string, error) {
	open := strings.IndexByte(ct, '(')
	if open < 0 {
		return nil, errors.New("no member list")
	}
	s := ct[open+1:]
	var members []string
	for {
		if s == "" || s[0] != '\'' {
			return nil, errors.New("malformed member list")
		}
		var b strings.Builder
		i := 1
		for ; ; i++ {
			if i >= len(s) {
				return nil, errors.New("unterminated member")
			}
			if s[i] == '\\' && i+1 < len(s) {
				i++
				b.WriteByte(s[i])
				continue
			}
			if s[i] == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					b.WriteByte('\'')
					i++
					continue
				}
				break
			}
			b.WriteByte(s[i])
		}
		members = append(members, b.String())
		s = s[i+1:]
		switch {
		case strings.HasPrefix(s, ","):
			s = s[1:]
		case strings.HasPrefix(s, ")"):
			return members, nil
		default:
			return nil, errors.New("malformed member list")
		}
	}
}

// want describes the values the column takes, for error messages.
func (c *codec) want() string {
	switch c.kind {
	case kindInt:
		return fmt.Sprintf("an integer in %d..%d", c.min, c.max)
	case kindUint, kindBit:
		return fmt.Sprintf("an integer in 0..%d", c.umax)
	case kindYear:
		return "a year (1901..2155, or 0)"
	case kindDecimal:
		return fmt.Sprintf("a decimal(%d,%d)", c.precision, c.scale)
	case kindFloat:
		return "a number"
	case kindString:
		return fmt.Sprintf("a string of at most %d characters", c.length)
	case kindEnum:
		return "one of " + quoteList(c.members)
	case kindSet:
		return "a comma-separated subset of " + quoteList(c.members)
	case kindDate:
		return `a date "YYYY-MM-DD"`
	case kindDateTime:
		if c.fsp > 0 {
			return fmt.Sprintf(`a datetime "YYYY-MM-DD hh:mm:ss[.fraction of up to %d digits]"`, c.fsp)
		}
		return `a datetime "YYYY-MM-DD hh:mm:ss"`
	case kindTime:
		return `a time "[-]hh:mm:ss[.fraction]"`
	case kindBinary:
		return fmt.Sprintf("base64 of at most %d bytes", c.length)
	case kindUUID:
		return "a UUID (or base64 of 16 bytes)"
	case kindNativeUUID:
		return "a UUID"
	}
	return "a value"
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// numeric reports whether the column's JSON form is a number.
func (c *codec) numeric() bool {
	switch c.kind {
	case kindInt, kindUint, kindBit, kindYear, kindFloat:
		return true
	}
	return false
}

// fromJSON checks a JSON token (json.Number, string, bool or nil) strictly: numbers for
// numeric columns, strings for the others, either for decimal.
func (c *codec) fromJSON(tok any) (any, error) {
	switch v := tok.(type) {
	case json.Number:
		if c.numeric() || c.kind == kindDecimal {
			return c.fromString(string(v))
		}
		return nil, fmt.Errorf("want %s, got the number %s", c.want(), v)
	case string:
		if c.numeric() {
			return nil, fmt.Errorf("want %s, got the string %q", c.want(), clip(v))
		}
		return c.fromString(v)
	case nil:
		return nil, fmt.Errorf("want %s, got null", c.want())
	}
	return nil, fmt.Errorf("want %s, got %s", c.want(), describe(tok))
}

// fromString parses the column's text form (command lines, JSON strings).
func (c *codec) fromString(s string) (any, error) {
	switch c.kind {
	case kindInt:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < c.min || n > c.max {
			return nil, fmt.Errorf("want %s, got %q", c.want(), clip(s))
		}
		return n, nil
	case kindUint, kindBit:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n > c.umax {
			return nil, fmt.Errorf("want %s, got %q", c.want(), clip(s))
		}
		return n, nil
	case kindYear:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || (n != 0 && (n < 1901 || n > 2155)) {
			return nil, fmt.Errorf("want %s, got %q", c.want(), clip(s))
		}
		return n, nil
	case kindDecimal:
		return c.parseDecimal(s)
	case kindFloat:
		bits := 64
		if c.single {
			bits = 32
		}
		f, err := strconv.ParseFloat(s, bits)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || (c.unsigned && f < 0) {
			return nil, fmt.Errorf("want %s, got %q", c.want(), clip(s))
		}
		return f, nil
	case kindString:
		if !utf8.ValidString(s) {
			return nil, errors.New("not valid UTF-8")
		}
		if c.fixed {
			s = strings.TrimRight(s, " ")
		}
		if n := utf8.RuneCountInString(s); n > c.length {
			return nil, fmt.Errorf("want %s, got %d characters", c.want(), n)
		}
		return s, nil
	case kindEnum:
		for _, m := range c.members {
			if s == m {
				return m, nil
			}
		}
		return nil, fmt.Errorf("want %s, got %s", c.want(), strconv.Quote(clip(s)))
	case kindSet:
		return c.parseSet(s)
	case kindDate:
		return parseDate(s)
	case kindDateTime:
		return parseDateTime(s, c.fsp)
	case kindTime:
		return parseTimeOfDay(s, c.fsp)
	case kindBinary:
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("want %s: %v", c.want(), err)
		}
		return c.fromBytes(b)
	case kindUUID:
		if u, ok := parseUUID(s); ok {
			return u[:], nil
		}
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || len(b) != 16 {
			return nil, fmt.Errorf("want %s, got %s", c.want(), strconv.Quote(clip(s)))
		}
		return b, nil
	case kindNativeUUID:
		u, ok := parseUUID(s)
		if !ok {
			return nil, fmt.Errorf("want %s, got %s", c.want(), strconv.Quote(clip(s)))
		}
		return formatUUID(u[:]), nil
	}
	return nil, fmt.Errorf("unsupported column")
}

// fromBytes checks raw bytes for a binary column, zero-padding binary(n) as MySQL stores it.
func (c *codec) fromBytes(b []byte) (any, error) {
	switch c.kind {
	case kindBinary:
		if len(b) > c.length {
			return nil, fmt.Errorf("want %s, got %d bytes", c.want(), len(b))
		}
		out := make([]byte, len(b), max(len(b), c.length))
		copy(out, b)
		if c.fixed {
			out = out[:c.length]
		}
		return out, nil
	case kindUUID:
		if len(b) != 16 {
			return nil, fmt.Errorf("want %s, got %d bytes", c.want(), len(b))
		}
		return bytes.Clone(b), nil
	}
	return nil, fmt.Errorf("want %s, got bytes", c.want())
}

// fromGo normalizes a Go value (a Key element, a Restriction.Equal value, a key column of a
// target row). Strings are read as the column's text form; integers and floats must fit;
// []byte is raw bytes for binary columns; time.Time is accepted for dates and datetimes.
func (c *codec) fromGo(v any) (any, error) {
	switch x := v.(type) {
	case int64: // canonical already, the common case
		if c.kind == kindInt && x >= c.min && x <= c.max {
			return x, nil
		}
	case uint64:
		if (c.kind == kindUint || c.kind == kindBit) && x <= c.umax {
			return x, nil
		}
	}
	switch x := v.(type) {
	case nil:
		return nil, fmt.Errorf("want %s, got null", c.want())
	case json.Number:
		return c.fromJSON(x)
	case string:
		return c.fromString(x)
	case []byte:
		if c.kind == kindBinary || c.kind == kindUUID {
			return c.fromBytes(x)
		}
		if c.kind == kindNativeUUID && len(x) == 16 {
			return formatUUID(x), nil
		}
		return c.fromString(string(x))
	case [16]byte:
		return c.fromGo(x[:])
	case time.Time:
		switch c.kind {
		case kindDate:
			return x.Format(time.DateOnly), nil
		case kindDateTime:
			return formatDateTime(x, c.fsp), nil
		}
		return nil, fmt.Errorf("want %s, got a time", c.want())
	case float64:
		return c.fromFloat(x)
	case float32:
		return c.fromFloat(float64(x))
	case bool:
		return nil, fmt.Errorf("want %s, got %v", c.want(), x)
	}
	if n, ok := asInt64(v); ok {
		return c.fromInteger(strconv.FormatInt(n, 10))
	}
	if n, ok := asUint64(v); ok {
		return c.fromInteger(strconv.FormatUint(n, 10))
	}
	return nil, fmt.Errorf("want %s, got %s", c.want(), describe(v))
}

func (c *codec) fromInteger(s string) (any, error) {
	if c.numeric() || c.kind == kindDecimal {
		return c.fromString(s)
	}
	return nil, fmt.Errorf("want %s, got the integer %s", c.want(), s)
}

func (c *codec) fromFloat(f float64) (any, error) {
	switch {
	case c.kind == kindFloat || c.kind == kindDecimal:
		return c.fromString(strconv.FormatFloat(f, 'g', -1, 64))
	case c.numeric() && f == math.Trunc(f) && math.Abs(f) < 1<<53:
		return c.fromString(strconv.FormatFloat(f, 'f', 0, 64))
	}
	return nil, fmt.Errorf("want %s, got %v", c.want(), f)
}

func asInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}

func asUint64(v any) (uint64, bool) {
	switch n := v.(type) {
	case uint:
		return uint64(n), true
	case uint8:
		return uint64(n), true
	case uint16:
		return uint64(n), true
	case uint32:
		return uint64(n), true
	case uint64:
		return n, true
	}
	return 0, false
}

// fromDB converts a value the driver returns (text or binary protocol, with or without
// parseTime) into the canonical value.
func (c *codec) fromDB(src any) (any, error) {
	switch x := src.(type) {
	case []byte:
		switch c.kind {
		case kindBit:
			if len(x) > 8 {
				return nil, fmt.Errorf("bit value of %d bytes", len(x))
			}
			var buf [8]byte
			copy(buf[8-len(x):], x)
			return c.fromGo(binary.BigEndian.Uint64(buf[:]))
		case kindBinary, kindUUID:
			return c.fromBytes(x)
		}
		return c.fromString(string(x))
	case string:
		return c.fromDB([]byte(x))
	}
	return c.fromGo(src)
}

// jsonValue is the canonical value v as a JSON-ready Go value (KeyMap).
func (c *codec) jsonValue(v any) any {
	switch c.kind {
	case kindBinary:
		if b, ok := v.([]byte); ok {
			return base64.StdEncoding.EncodeToString(b)
		}
	case kindUUID:
		if b, ok := v.([]byte); ok && len(b) == 16 {
			return formatUUID(b)
		}
	}
	return v
}

// appendJSON appends the canonical value v in JSON.
func (c *codec) appendJSON(buf []byte, v any) []byte {
	switch x := c.jsonValue(v).(type) {
	case int64:
		return strconv.AppendInt(buf, x, 10)
	case uint64:
		return strconv.AppendUint(buf, x, 10)
	case float64:
		bits := 64
		if c.single {
			bits = 32
		}
		return strconv.AppendFloat(buf, x, 'g', -1, bits)
	case string:
		return appendJSONString(buf, x)
	}
	return append(buf, "null"...)
}

// appendJSONString writes s as a JSON string without HTML escaping.
func appendJSONString(buf []byte, s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return append(buf, bytes.TrimSuffix(b.Bytes(), []byte("\n"))...)
}

var decimalPattern = regexp.MustCompile(`^[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?$`)

// parseDecimal checks s against decimal(precision, scale) and writes it with exactly scale
// decimals, as MySQL returns it. Digits beyond the scale must be zeros (MySQL would round).
func (c *codec) parseDecimal(s string) (string, error) {
	if len(s) > 200 || !decimalPattern.MatchString(s) {
		return "", fmt.Errorf("want %s, got %s", c.want(), strconv.Quote(clip(s)))
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return "", fmt.Errorf("want %s, got %s", c.want(), strconv.Quote(clip(s)))
	}
	if c.unsigned && r.Sign() < 0 {
		return "", fmt.Errorf("want %s unsigned, got %q", c.want(), clip(s))
	}
	pow := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(c.scale)), nil)
	scaled := new(big.Rat).Mul(r, new(big.Rat).SetInt(pow))
	if !scaled.IsInt() {
		return "", fmt.Errorf("want %s, got %q: more than %d decimals", c.want(), clip(s), c.scale)
	}
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(c.precision)), nil)
	if new(big.Int).Abs(scaled.Num()).Cmp(limit) >= 0 {
		return "", fmt.Errorf("want %s, got %q: out of range", c.want(), clip(s))
	}
	return r.FloatString(c.scale), nil
}

func (c *codec) parseSet(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	have := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		found := false
		for _, m := range c.members {
			if part == m {
				found = true
			}
		}
		if !found || have[part] {
			return "", fmt.Errorf("want %s, got %s", c.want(), strconv.Quote(clip(s)))
		}
		have[part] = true
	}
	var out []string
	for _, m := range c.members {
		if have[m] {
			out = append(out, m)
		}
	}
	return strings.Join(out, ","), nil
}

func parseDate(s string) (string, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil || len(s) != 10 || t.Year() < 1 {
		return "", fmt.Errorf(`want a date "YYYY-MM-DD", got %s`, strconv.Quote(clip(s)))
	}
	return s, nil
}

// parseDateTime reads "YYYY-MM-DD hh:mm:ss[.f]" (or with a T) and writes it with exactly fsp
// fractional digits. Digits beyond fsp must be zeros; time zones are refused (datetime has
// none).
func parseDateTime(s string, fsp int) (string, error) {
	bad := fmt.Errorf(`want a datetime "YYYY-MM-DD hh:mm:ss[.fraction]", got %s`, strconv.Quote(clip(s)))
	if len(s) < 19 || (s[10] != ' ' && s[10] != 'T') {
		return "", bad
	}
	date, clock, frac := s[:10], s[11:19], s[19:]
	t, err := time.Parse(time.DateTime, date+" "+clock)
	if err != nil || t.Year() < 1 {
		return "", bad
	}
	digits, err := fraction(frac, fsp)
	if err != nil {
		return "", fmt.Errorf("%w: %v", bad, err)
	}
	out := date + " " + clock
	if fsp > 0 {
		out += "." + digits
	}
	return out, nil
}

// fraction checks ".digits" against fsp and returns exactly fsp digits.
func fraction(frac string, fsp int) (string, error) {
	digits := ""
	if frac != "" {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return "", errors.New("malformed fraction")
		}
		digits = frac[1:]
		for _, r := range digits {
			if r < '0' || r > '9' {
				return "", errors.New("malformed fraction")
			}
		}
	}
	if len(digits) > fsp {
		if strings.Trim(digits[fsp:], "0") != "" {
			return "", fmt.Errorf("more than %d fractional digits", fsp)
		}
		digits = digits[:fsp]
	}
	return digits + strings.Repeat("0", fsp-len(digits)), nil
}

func formatDateTime(t time.Time, fsp int) string {
	out := t.Format(time.DateTime)
	if fsp > 0 {
		out += "." + fmt.Sprintf("%09d", t.Nanosecond())[:fsp]
	}
	return out
}

var timePattern = regexp.MustCompile(`^(-?)([0-9]{1,3}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?$`)

// parseTimeOfDay reads a TIME value, -838:59:59 to 838:59:59.
func parseTimeOfDay(s string, fsp int) (string, error) {
	bad := fmt.Errorf(`want a time "[-]hh:mm:ss[.fraction]", got %s`, strconv.Quote(clip(s)))
	m := timePattern.FindStringSubmatch(s)
	if m == nil {
		return "", bad
	}
	h, _ := strconv.Atoi(m[2])
	mi, _ := strconv.Atoi(m[3])
	se, _ := strconv.Atoi(m[4])
	digits, err := fraction(m[5], fsp)
	if err != nil || mi > 59 || se > 59 || h > 838 || (h == 838 && strings.Trim(digits, "0") != "") {
		return "", bad
	}
	out := fmt.Sprintf("%02d:%02d:%02d", h, mi, se)
	if fsp > 0 {
		out += "." + digits
	}
	if m[1] == "-" && strings.Trim(out, "0:.") != "" {
		out = "-" + out
	}
	return out, nil
}

// parseUUID reads the canonical 8-4-4-4-12 form or 32 hex digits.
func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) == 36 {
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return u, false
		}
		s = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	}
	if len(s) != 32 {
		return u, false
	}
	if _, err := hex.Decode(u[:], []byte(s)); err != nil {
		return u, false
	}
	return u, true
}

func formatUUID(b []byte) string {
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func describe(v any) string {
	switch v.(type) {
	case json.Delim:
		return fmt.Sprintf("a JSON %v", v)
	case bool:
		return fmt.Sprintf("the boolean %v", v)
	}
	return fmt.Sprintf("a %T", v)
}

// clip shortens a value quoted in an error message.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
