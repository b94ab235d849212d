package ctl

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

const helpWidth = 100

// placeholders name the values of flags whose usage has no `NAME`.
var placeholders = map[string]string{"config": "FILE", "mysql": "DSN", "nats": "URL"}

func helpCommand() *command {
	return &command{
		name: "help", args: "[COMMAND|output]", maxArgs: 1, argKind: argCommands,
		summary: "show help for jobsctl, a command, or the output fields",
		help:    "Without an argument, the overview; with a command, its flags, output fields and examples; 'output', every field of -o json and -o csv.",
		example: []string{"jobsctl help list", "jobsctl help output"},
		setup: func(fs *pflag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, args []string) error {
				if len(args) == 0 {
					return writeRootHelp(s.env.Stdout)
				}
				if args[0] == "output" {
					return writeOutputHelp(s.env.Stdout)
				}
				c := lookup(args[0])
				if c == nil || c.hidden {
					return syntaxf("help: unknown command %q%s; commands: %s", args[0], suggest(args[0]), strings.Join(commandNames(), ", "))
				}
				return writeCommandHelp(s.env.Stdout, c)
			}
		},
	}
}

func writeRootHelp(w io.Writer) error {
	var b strings.Builder
	b.WriteString("jobsctl inspects and steers jetjobs' job queues: the jobs tables in MySQL (DataJoint's\n" +
		"schema.~~table) and their JetStream streams.\n\n")
	b.WriteString("Usage:\n  jobsctl [flags] COMMAND [ARGS] [flags]\n\nCommands:\n")
	width := 0
	for _, c := range visible() {
		width = max(width, len(c.name))
	}
	for _, c := range visible() {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, c.name, c.summary)
	}
	b.WriteString("\nFlags of every command (before or after the command's name):\n")
	writeFlags(&b, newGlobals().fs)
	b.WriteString("\n" + wrap("TABLE is a target table, schema.table (e.g. lab.__analysis); its jobs table is schema.~~table "+
		"without leading underscores. Commands taking [TABLE...] work on every table configured under \"tables\" when given none.", 0))
	b.WriteString("\n" + wrap("Configuration, each overriding the one before: defaults, the JSON file (--config or "+
		"JETJOBS_CONFIG), JETJOBS_MYSQL_DSN and JETJOBS_NATS_URL, then --mysql and --nats. refresh takes its defaults "+
		"from the file's jobs section (default_priority, stale_timeout, orphan_timeout).", 0))
	b.WriteString("\n" + wrap("Exit codes: 0 success; 1 the operation failed; 2 bad usage or configuration (an unknown "+
		"table, flag or key column, a refused confirmation without a terminal), in which case nothing was changed.", 0))
	b.WriteString("\nRun 'jobsctl help COMMAND' for a command's flags, output fields and examples,\n" +
		"'jobsctl help output' for every field of -o json and -o csv,\n" +
		"'jobsctl completion bash|zsh|fish' for shell completion.\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writeCommandHelp(w io.Writer, c *command) error {
	var b strings.Builder
	fmt.Fprintf(&b, "jobsctl %s: %s\n\nUsage:\n  jobsctl %s", c.name, c.summary, c.name)
	if c.args != "" {
		b.WriteString(" " + c.args)
	}
	b.WriteString(" [flags]\n\n")
	if c.help != "" {
		b.WriteString(wrap(c.help, 0) + "\n")
	}
	own := flagsOf(c)
	if own.HasFlags() {
		b.WriteString("Flags:\n")
		writeFlags(&b, own)
		b.WriteString("\n")
	}
	b.WriteString("Flags of every command:\n")
	writeFlags(&b, newGlobals().fs)
	if len(c.fields) > 0 {
		b.WriteString("\nOutput fields:\n")
		writeFields(&b, c)
	}
	if len(c.example) > 0 {
		b.WriteString("\nExamples:\n")
		for _, e := range c.example {
			b.WriteString("  " + e + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeOutputHelp(w io.Writer) error {
	var b strings.Builder
	b.WriteString(wrap("Every command prints an aligned table or a sentence for people (-o text, the default), or its data "+
		"for machines: -o json (indented; times RFC 3339 in UTC with milliseconds; a missing time or duration is null; "+
		"a key is an object of its columns) or -o csv (RFC 4180 with a header row of the JSON field names unless "+
		"--no-headers; null is an empty cell; a key is its compact JSON object). Text tables show times in the local "+
		"time zone, keys as COLUMN=VALUE,... (the --key syntax), and only the main fields. Field names are snake_case "+
		"and stable; new fields may be added.", 0))
	for _, c := range visible() {
		if len(c.fields) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n", c.name)
		writeFields(&b, c)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeFields(b *strings.Builder, c *command) {
	for _, d := range c.fields {
		b.WriteString(wrap(d.title, 2))
		width := 0
		for _, col := range d.cols {
			width = max(width, len(col.name))
		}
		for _, col := range d.cols {
			fmt.Fprintf(b, "    %-*s  %s\n", width, col.name, strings.TrimSpace(wrap(col.doc, width+6)))
		}
	}
}

// writeFlags lists every flag of fs with its value placeholder, usage and default.
func writeFlags(b *strings.Builder, fs *pflag.FlagSet) {
	type line struct{ left, right string }
	var lines []line
	width := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name, usage := pflag.UnquoteUsage(f)
		if p, ok := placeholders[f.Name]; ok && !strings.Contains(f.Usage, "`") {
			name = p
		}
		if f.Value.Type() == "bool" {
			name = ""
		} else if name == strings.ToLower(name) {
			name = strings.ToUpper(name)
		}
		left := "    --" + f.Name
		if f.Shorthand != "" {
			left = "-" + f.Shorthand + ", --" + f.Name
		}
		if name != "" {
			left += " " + name
		}
		left = "  " + left
		lines = append(lines, line{left, usage + " (default: " + defaultText(f) + ")"})
		width = max(width, len(left))
	})
	width = min(width, 34)
	for _, l := range lines {
		if len(l.left) > width {
			b.WriteString(l.left + "\n" + wrap(l.right, width+2))
			continue
		}
		text := wrap(l.right, width+2)
		b.WriteString(l.left + strings.Repeat(" ", width+2-len(l.left)) + strings.TrimLeft(text, " "))
	}
}

// defaultText is a flag's default as shown in help.
func defaultText(f *pflag.Flag) string {
	if a := f.Annotations[annDefault]; len(a) > 0 {
		return a[0]
	}
	switch f.Value.Type() {
	case "string":
		if f.DefValue == "" {
			return "none"
		}
		return strconv.Quote(f.DefValue)
	case "stringSlice", "stringArray":
		if f.DefValue == "[]" {
			return "none"
		}
	case "duration":
		if f.DefValue == "0s" {
			return "0, none"
		}
	}
	return f.DefValue
}

// wrap fills text to helpWidth, every line indented by indent spaces, ending in a newline.
func wrap(text string, indent int) string {
	var b strings.Builder
	pad := strings.Repeat(" ", indent)
	for _, para := range strings.Split(text, "\n") {
		col := 0
		for i, word := range strings.Fields(para) {
			switch {
			case i == 0:
				b.WriteString(pad + word)
				col = indent + len(word)
			case col+1+len(word) > helpWidth:
				b.WriteString("\n" + pad + word)
				col = indent + len(word)
			default:
				b.WriteString(" " + word)
				col += 1 + len(word)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// usageOf is the short usage line of a command, for errors.
func usageOf(c *command) string {
	return strings.TrimSpace("jobsctl "+c.name+" "+c.args) + " [flags]"
}
