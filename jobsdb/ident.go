package jobsdb

import (
	"fmt"
	"strings"
)

// quoteIdent backquotes a MySQL identifier, doubling backquotes inside it. Every identifier
// jobsdb writes into SQL goes through it; the names themselves come from information_schema.
func quoteIdent(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// qualified is `schema`.`table`.
func qualified(schema, table string) string {
	return quoteIdent(schema) + "." + quoteIdent(table)
}

// quoteString writes s as a single-quoted SQL string literal, for the few places where SQL
// needs a literal and not a placeholder (DDL comments). It escapes quotes and backslashes as
// the default sql_mode reads them.
func quoteString(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range s {
		switch r {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// SplitTableName splits "schema.table" (either part may be backquoted, with doubled
// backquotes inside) into its names. A name without a schema has schema "".
func SplitTableName(name string) (schema, table string, err error) { return splitTableName(name) }

func splitTableName(name string) (schema, table string, err error) {
	parts, err := splitIdents(name)
	if err != nil {
		return "", "", fmt.Errorf("table name %q: %w", name, err)
	}
	switch len(parts) {
	case 1:
		return "", parts[0], nil
	case 2:
		return parts[0], parts[1], nil
	}
	return "", "", fmt.Errorf("table name %q: want schema.table", name)
}

func splitIdents(s string) ([]string, error) {
	var parts []string
	for {
		var part string
		if strings.HasPrefix(s, "`") {
			var b strings.Builder
			i := 1
			for ; ; i++ {
				if i >= len(s) {
					return nil, fmt.Errorf("unterminated backquote")
				}
				if s[i] == '`' {
					if i+1 < len(s) && s[i+1] == '`' {
						b.WriteByte('`')
						i++
						continue
					}
					break
				}
				b.WriteByte(s[i])
			}
			part, s = b.String(), s[i+1:]
			if s != "" && s[0] != '.' {
				return nil, fmt.Errorf("unexpected %q after a quoted name", s)
			}
		} else {
			dot := strings.IndexByte(s, '.')
			if dot < 0 {
				part, s = s, ""
			} else {
				part, s = s[:dot], s[dot:]
			}
		}
		if part == "" {
			return nil, fmt.Errorf("empty name")
		}
		parts = append(parts, part)
		if s == "" {
			return parts, nil
		}
		s = s[1:] // the dot
		if s == "" {
			return nil, fmt.Errorf("empty name after the dot")
		}
	}
}
