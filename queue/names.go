package queue

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Priority bounds: DataJoint's priority column is a signed tinyint. Lower is more urgent.
const (
	PriorityMin = -128
	PriorityMax = 127
)

// wakeToken is the last token of a table's wake subject. The stream captures two tokens after
// the table, so the wake subject is never stored.
const wakeToken = "wake"

// maxStreamNameLen bounds stream names: the server refuses names over 255 bytes and stores each
// stream in a directory named after it. Longer names are shortened with a hash of the full name.
const maxStreamNameLen = 240

// streamNameSeparator joins the escaped parts of a stream name. An escaped part never
// contains "--" ('-' is always followed by two hex digits), so the join is injective.
const streamNameSeparator = "--"

// escapeToken escapes s for use as one subject token or one part of a stream name: bytes in
// [A-Za-z0-9_] are kept, every other byte becomes '-' and two lowercase hex digits. The mapping
// is injective ('-' only ever starts an escape) and the result never contains '.', '*', '>',
// whitespace or path separators.
func escapeToken(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if !isPlainByte(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const digits = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isPlainByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('-')
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&0x0f])
	}
	return b.String()
}

func isPlainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// streamName is the name of a table's stream: the escaped prefix, schema and table joined by
// "--", e.g. "jetjobs--lab--__session_analysis". Names longer than maxStreamNameLen keep a
// readable head and end in a hash of the full name.
func streamName(prefix, schema, table string) string {
	name := escapeToken(prefix) + streamNameSeparator + escapeToken(schema) + streamNameSeparator + escapeToken(table)
	if len(name) <= maxStreamNameLen {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return name[:maxStreamNameLen-2-32] + streamNameSeparator + hex.EncodeToString(sum[:16])
}

// validatePrefix checks a subject prefix: one or more dot-separated non-empty tokens without
// wildcards or whitespace.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("%w: subject prefix is empty", ErrInvalidName)
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return fmt.Errorf("%w: subject prefix %q has an empty token", ErrInvalidName, prefix)
		}
		if strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("%w: subject prefix %q contains a wildcard or whitespace", ErrInvalidName, prefix)
		}
	}
	return nil
}

// priorityToken is the subject token and consumer name of a priority: "p5", "p-3". '-' is
// allowed in subject tokens and consumer names.
func priorityToken(priority int) string {
	return "p" + strconv.Itoa(priority)
}

// parsePriorityToken is the inverse of priorityToken; it rejects anything priorityToken would
// not produce (leading zeros, "+", out of range).
func parsePriorityToken(tok string) (int, bool) {
	if len(tok) < 2 || tok[0] != 'p' {
		return 0, false
	}
	p, err := strconv.Atoi(tok[1:])
	if err != nil || p < PriorityMin || p > PriorityMax || priorityToken(p) != tok {
		return 0, false
	}
	return p, true
}

// validPriority reports whether p fits the priority column.
func validPriority(p int) bool { return p >= PriorityMin && p <= PriorityMax }

// KeyHash is the subject token of a key: the hex of the first 16 bytes of the SHA-256 of the
// key's canonical JSON.
func KeyHash(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:keyHashBytes])
}

// keyHashBytes is how much of the SHA-256 a subject carries.
const keyHashBytes = 16

// isKeyHash reports whether tok has the form of a KeyHash: 32 lowercase hex digits.
func isKeyHash(tok string) bool {
	if len(tok) != 2*keyHashBytes {
		return false
	}
	for _, c := range tok {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// priorityFromSubject reads the priority token of a message subject
// (<base>.p<priority>.<keyhash>).
func priorityFromSubject(subject string) (int, bool) {
	last := strings.LastIndexByte(subject, '.')
	if last < 0 {
		return 0, false
	}
	prev := strings.LastIndexByte(subject[:last], '.')
	return parsePriorityToken(subject[prev+1 : last])
}

// TableSubject is the first tokens of every subject of a target table, as Open names them:
// <prefix>.<schema>.<table>, with schema and table escaped (bytes outside [A-Za-z0-9_] become
// '-' and two lowercase hex digits). An empty prefix is DefaultPrefix. Other programs build
// the subjects of a table's events on it (package notify).
func TableSubject(prefix, schema, table string) (string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := validatePrefix(prefix); err != nil {
		return "", err
	}
	if schema == "" || table == "" {
		return "", fmt.Errorf("%w: schema %q, table %q: both are required", ErrInvalidName, schema, table)
	}
	return prefix + "." + escapeToken(schema) + "." + escapeToken(table), nil
}
