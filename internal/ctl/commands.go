package ctl

import (
	"context"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// runFunc runs a command with its positional arguments; its flags were bound by setup.
type runFunc func(ctx context.Context, s *session, args []string) error

// command is one entry of the registry. Dispatch, help and the completion scripts are all
// generated from the registry, so they cannot drift apart.
type command struct {
	name    string
	args    string // positional arguments as shown in usage: "TABLE", "[TABLE...]"
	minArgs int
	maxArgs int    // < 0: any number
	argKind string // what completes the positional arguments: argTables, argCommands, argShells or ""
	summary string // one line, for the command list and completion descriptions
	help    string // paragraphs shown by 'jobsctl help COMMAND'
	example []string
	fields  []outputDoc // output fields, for 'jobsctl help COMMAND' and 'jobsctl help output'
	hidden  bool        // not listed in help or completion (internal helpers of the scripts)
	// setup registers the command's flags on fs and returns the function that runs it with
	// the values parsed into them.
	setup func(fs *pflag.FlagSet) runFunc
}

// outputDoc documents the fields of one output shape of a command.
type outputDoc struct {
	title string // e.g. "-o json: an object keyed by table; each value:"
	cols  []column
}

// What completes positional arguments.
const (
	argTables   = "tables"
	argCommands = "commands"
	argShells   = "shells"
)

// Flag annotations read by help and completion.
const (
	// annValues lists the values a flag accepts, for completion.
	annValues = "jobsctl_values"
	// annDefault replaces the flag's default in help when it comes from the configuration.
	annDefault = "jobsctl_default"
	// annFiles is the annValues marker of a flag that takes a file name.
	annFiles = "<file>"
)

func annotate(fs *pflag.FlagSet, name string, values ...string) {
	if err := fs.SetAnnotation(name, annValues, values); err != nil {
		panic(err)
	}
}

func describeDefault(fs *pflag.FlagSet, name, text string) {
	if err := fs.SetAnnotation(name, annDefault, []string{text}); err != nil {
		panic(err)
	}
}

var registry []*command

func init() {
	registry = []*command{
		progressCommand(),
		listCommand(),
		errorsCommand(),
		showCommand(),
		refreshCommand(),
		notifyCommand(),
		ignoreCommand(),
		retryCommand(),
		deleteCommand(),
		dropCommand(),
		watchCommand(),
		streamCommand(),
		serveCommand(),
		completionCommand(),
		helpCommand(),
		tablesCommand(),
	}
}

// lookup returns the command called name, or nil.
func lookup(name string) *command {
	for _, c := range registry {
		if c.name == name {
			return c
		}
	}
	return nil
}

// visible returns the commands listed in help and completion.
func visible() []*command {
	var out []*command
	for _, c := range registry {
		if !c.hidden {
			out = append(out, c)
		}
	}
	return out
}

func commandNames() []string {
	var names []string
	for _, c := range visible() {
		names = append(names, c.name)
	}
	return names
}

// flagsOf returns a command's own flags (without the global ones).
func flagsOf(c *command) *pflag.FlagSet {
	fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
	fs.SortFlags = false
	c.setup(fs)
	return fs
}

// suggest returns " (did you mean X?)" for a mistyped command name, or "".
func suggest(name string) string {
	best, bestDist := "", 3
	for _, n := range commandNames() {
		if d := editDistance(strings.ToLower(name), n); d < bestDist {
			best, bestDist = n, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// tablesCommand prints the configured tables, one a line, for the completion scripts.
func tablesCommand() *command {
	return &command{
		name:    "__tables",
		maxArgs: 0,
		summary: "print the configured tables (used by the completion scripts)",
		hidden:  true,
		setup: func(fs *pflag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, args []string) error {
				cfg, err := s.config()
				if err != nil {
					return err
				}
				names := cfg.TableNames()
				sort.Strings(names)
				for _, n := range names {
					s.printf("%s\n", n)
				}
				return nil
			}
		},
	}
}
