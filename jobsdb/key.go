package jobsdb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Key holds a job's key values in the order of Target.KeyColumns, as SQL-ready values.
//
// The values of a key made by ParseKey, KeyFromStrings, KeyFromMap or read from the database
// are canonical: int64 (signed integers, year), uint64 (unsigned integers, bit), float64
// (float, double), string (decimal with its full scale, char/varchar, enum, set, date
// "YYYY-MM-DD", datetime/timestamp "YYYY-MM-DD hh:mm:ss[.fff]" with the column's precision,
// time, MariaDB uuid) or []byte (binary, varbinary, and binary(16) whose JSON form is a UUID).
// Every operation also accepts hand-built keys of other Go types (int, time.Time, a UUID
// string for binary(16)…) and normalizes them the same way.
type Key []any

// keyCodecs returns the codecs of the key columns: those Inspect built, or new ones for a
// hand-built Target.
func (t *Target) keyCodecs() ([]*codec, error) {
	if len(t.codecs) == len(t.KeyColumns) && len(t.codecs) > 0 {
		return t.codecs, nil
	}
	if len(t.KeyColumns) == 0 {
		return nil, &KeyError{Table: t.FullName(), Problem: "the target has no key columns"}
	}
	codecs := make([]*codec, len(t.KeyColumns))
	for i, col := range t.KeyColumns {
		c, err := newCodec(col)
		if err != nil {
			return nil, &KeyError{Table: t.FullName(), Column: col.Name, Problem: err.Error()}
		}
		codecs[i] = c
	}
	return codecs, nil
}

func (t *Target) keyIndex(name string) int {
	for i, c := range t.KeyColumns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

func (t *Target) keyNames() string {
	names := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// ParseKey decodes a JSON object of key columns, strictly: missing, extra or mistyped columns
// are ErrBadKey. Numbers are read exactly (no float rounding of 64-bit integers); duplicate
// names, null values, nested values and anything after the object are refused.
func (t *Target) ParseKey(data []byte) (Key, error) {
	if key, ok := t.parseKeyFast(data); ok {
		return key, nil
	}
	return t.parseKeySlow(data)
}

// parseKeyFast parses the common form of a key, a flat JSON object of plain numbers and
// strings without escapes (what the scheduler publishes), without encoding/json's decoder. It
// gives up (false) on anything else, valid or not, and parseKeySlow decides then: so both
// always agree, which FuzzParseKey checks.
func (t *Target) parseKeyFast(data []byte) (Key, bool) {
	codecs, err := t.keyCodecs()
	if err != nil {
		return nil, false
	}
	key := make(Key, len(codecs))
	seen := 0
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, false
	}
	i++
	for n := 0; ; n++ {
		i = skipSpace(data, i)
		if n == 0 && i < len(data) && data[i] == '}' {
			break
		}
		name, next, ok := plainString(data, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(data, next)
		if i >= len(data) || data[i] != ':' {
			return nil, false
		}
		i = skipSpace(data, i+1)
		col := t.keyIndex(name)
		if col < 0 || seen&(1<<col) != 0 || col >= 64 {
			return nil, false
		}
		var v any
		if i < len(data) && data[i] == '"' {
			var s string
			if s, i, ok = plainString(data, i); !ok {
				return nil, false
			}
			v, err = codecs[col].fromJSON(s)
		} else {
			var num string
			if num, i, ok = jsonNumber(data, i); !ok {
				return nil, false
			}
			v, err = codecs[col].fromJSON(json.Number(num))
		}
		if err != nil {
			return nil, false
		}
		key[col] = v
		seen |= 1 << col
		i = skipSpace(data, i)
		if i < len(data) && data[i] == ',' {
			i++
			continue
		}
		if i < len(data) && data[i] == '}' {
			break
		}
		return nil, false
	}
	if skipSpace(data, i+1) != len(data) || seen != 1<<len(codecs)-1 {
		return nil, false
	}
	return key, true
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string at data[i] that has no escapes and is valid UTF-8.
func plainString(data []byte, i int) (string, int, bool) {
	if i >= len(data) || data[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			s := data[i+1 : j]
			return string(s), j + 1, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return "", i, false
		}
	}
	return "", i, false
}

// jsonNumber reads a number at data[i] as JSON writes it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func jsonNumber(data []byte, i int) (string, int, bool) {
	start := i
	digits := func() bool {
		j := i
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(data) && data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case !digits():
		return "", start, false
	}
	if i < len(data) && data[i] == '.' {
		i++
		if !digits() {
			return "", start, false
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if !digits() {
			return "", start, false
		}
	}
	return string(data[start:i]), i, true
}

// parseKeySlow is ParseKey with encoding/json's decoder: any JSON, and the precise errors.
func (t *Target) parseKeySlow(data []byte) (Key, error) {
	codecs, err := t.keyCodecs()
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, t.badKey("", "want a JSON object of the key columns (%s)", t.keyNames())
	}
	key := make(Key, len(codecs))
	seen := make([]bool, len(codecs))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, t.badKey("", "malformed JSON: %v", err)
		}
		name, _ := tok.(string)
		i := t.keyIndex(name)
		if i < 0 {
			return nil, t.badKey(name, "not a key column (the key is %s)", t.keyNames())
		}
		if seen[i] {
			return nil, t.badKey(name, "given twice")
		}
		seen[i] = true
		tok, err = dec.Token()
		if err != nil {
			return nil, t.badKey(name, "malformed JSON: %v", err)
		}
		if key[i], err = codecs[i].fromJSON(tok); err != nil {
			return nil, t.badKey(name, "%v", err)
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, t.badKey("", "malformed JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, t.badKey("", "unexpected data after the JSON object")
	}
	for i, ok := range seen {
		if !ok {
			return nil, t.badKey(t.KeyColumns[i].Name, "missing")
		}
	}
	return key, nil
}

// KeyFromStrings builds a key from column=value text, as given on a command line. Values are
// read per column type: decimal numbers, dates "YYYY-MM-DD", base64 (or a UUID for
// binary(16)) for binary columns, text as is for strings.
func (t *Target) KeyFromStrings(values map[string]string) (Key, error) {
	m := make(map[string]any, len(values))
	for k, v := range values {
		m[k] = v
	}
	return t.KeyFromMap(m)
}

// KeyFromMap builds a key from column → Go value (as Restriction.Equal and target rows hold
// them); every key column must be present and no other.
func (t *Target) KeyFromMap(values map[string]any) (Key, error) {
	codecs, err := t.keyCodecs()
	if err != nil {
		return nil, err
	}
	for name := range values {
		if t.keyIndex(name) < 0 {
			return nil, t.badKey(name, "not a key column (the key is %s)", t.keyNames())
		}
	}
	key := make(Key, len(codecs))
	for i, c := range codecs {
		v, ok := values[c.name]
		if !ok {
			return nil, t.badKey(c.name, "missing")
		}
		if key[i], err = c.fromGo(v); err != nil {
			return nil, t.badKey(c.name, "%v", err)
		}
	}
	return key, nil
}

// CheckKey validates k against the key columns and returns it in canonical form.
func (t *Target) CheckKey(k Key) (Key, error) {
	codecs, err := t.keyCodecs()
	if err != nil {
		return nil, err
	}
	if len(k) != len(codecs) {
		return nil, t.badKey("", "want %d values (%s), got %d", len(codecs), t.keyNames(), len(k))
	}
	out := make(Key, len(k))
	for i, c := range codecs {
		if out[i], err = c.fromGo(k[i]); err != nil {
			return nil, t.badKey(c.name, "%v", err)
		}
	}
	return out, nil
}

// checkKeys validates keys and drops repeated ones, keeping the first.
func (t *Target) checkKeys(keys []Key) ([]Key, error) {
	out, _, err := t.checkKeysIndexed(keys)
	return out, err
}

// checkKeysIndexed is checkKeys, also returning where each key first stood in keys.
func (t *Target) checkKeysIndexed(keys []Key) ([]Key, []int, error) {
	out := make([]Key, 0, len(keys))
	first := make([]int, 0, len(keys))
	seen := make(map[string]bool, len(keys))
	for i, k := range keys {
		ck, err := t.CheckKey(k)
		if err != nil {
			return nil, nil, err
		}
		id := keyID(ck)
		if !seen[id] {
			seen[id] = true
			out = append(out, ck)
			first = append(first, i)
		}
	}
	return out, first, nil
}

// KeyJSON encodes k as a JSON object with the columns in key order (canonical: equal keys give
// equal bytes).
func (t *Target) KeyJSON(k Key) ([]byte, error) {
	ck, err := t.CheckKey(k)
	if err != nil {
		return nil, err
	}
	codecs, _ := t.keyCodecs()
	buf := []byte{'{'}
	for i, c := range codecs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, c.name)
		buf = append(buf, ':')
		buf = c.appendJSON(buf, ck[i])
	}
	return append(buf, '}'), nil
}

// KeyString is KeyJSON for messages and logs: the JSON text, or the values as Go prints
// them when k is not a valid key.
func (t *Target) KeyString(k Key) string {
	b, err := t.KeyJSON(k)
	if err != nil {
		return fmt.Sprint([]any(k))
	}
	return string(b)
}

// KeyMap returns k as column → JSON-ready value, for display and for handlers: int64, uint64,
// float64 or string (binary values in base64, binary(16) as a UUID).
func (t *Target) KeyMap(k Key) map[string]any {
	m := make(map[string]any, len(k))
	codecs, err := t.keyCodecs()
	for i, v := range k {
		if err != nil || i >= len(codecs) {
			break
		}
		if cv, err := codecs[i].fromGo(v); err == nil {
			v = cv
		}
		m[codecs[i].name] = codecs[i].jsonValue(v)
	}
	return m
}

// keyID is a map key for a canonical key: equal canonical keys, equal IDs.
func keyID(k Key) string {
	var b strings.Builder
	for _, v := range k {
		switch x := v.(type) {
		case int64:
			b.WriteString("i")
			b.WriteString(strconv.FormatInt(x, 10))
		case uint64:
			b.WriteString("u")
			b.WriteString(strconv.FormatUint(x, 10))
		case float64:
			b.WriteString("f")
			b.WriteString(strconv.FormatUint(math.Float64bits(x), 16))
		case string:
			fmt.Fprintf(&b, "s%d:%s", len(x), x)
		case []byte:
			fmt.Fprintf(&b, "b%d:%s", len(x), x)
		default:
			fmt.Fprintf(&b, "?%v", x)
		}
		b.WriteByte('|')
	}
	return b.String()
}

// keyScanner scans one key column of a result row into its canonical value.
type keyScanner struct {
	c   *codec
	dst *any
}

func (s keyScanner) Scan(src any) error {
	v, err := s.c.fromDB(src)
	if err != nil {
		return fmt.Errorf("key column %s: %w", s.c.name, err)
	}
	*s.dst = v
	return nil
}

// keyScanners returns scan destinations filling k.
func keyScanners(codecs []*codec, k Key) []any {
	dst := make([]any, len(codecs))
	for i, c := range codecs {
		dst[i] = keyScanner{c: c, dst: &k[i]}
	}
	return dst
}

// KeyValues checks a partial key, column → value over some or all key columns (values as
// KeyFromMap takes them: strings in the column's text form, Go numbers, json.Number…), and
// returns it with JSON-ready canonical values, as KeyMap gives them: what a notify carries.
func (t *Target) KeyValues(m map[string]any) (map[string]any, error) {
	if len(m) == 0 {
		return nil, t.badKey("", "no column given (name some key columns: %s)", t.keyNames())
	}
	cols, vals, err := t.equalMap(m)
	if err != nil {
		return nil, err
	}
	codecs, _ := t.keyCodecs() // equalMap succeeded: they are there
	out := make(map[string]any, len(cols))
	for k, i := range cols {
		out[t.KeyColumns[i].Name] = codecs[i].jsonValue(vals[k])
	}
	return out, nil
}

// equalMap normalizes a restriction's column → value map over the key columns, in key
// order.
func (t *Target) equalMap(m map[string]any) (cols []int, vals []any, err error) {
	codecs, err := t.keyCodecs()
	if err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(m))
	for name := range m {
		if t.keyIndex(name) < 0 {
			return nil, nil, t.badKey(name, "not a key column (restrict on %s)", t.keyNames())
		}
		names = append(names, name)
	}
	sort.Slice(names, func(a, b int) bool { return t.keyIndex(names[a]) < t.keyIndex(names[b]) })
	for _, name := range names {
		i := t.keyIndex(name)
		v, err := codecs[i].fromGo(m[name])
		if err != nil {
			return nil, nil, t.badKey(name, "%v", err)
		}
		cols, vals = append(cols, i), append(vals, v)
	}
	return cols, vals, nil
}
