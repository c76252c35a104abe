package main

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync/config"
)

// docCommand finds a cohortsync command line in the docs: "go run
// ./cmd/cohortsync ARGS" or "cohortsync ARGS" at the start of a shell line
// (after any VAR=value assignments).
var docCommand = regexp.MustCompile(`^(?:[A-Z_]+=\S+\s+)*(?:go run \./cmd/cohortsync|cohortsync)\s+(.*)$`)

// TestDocumentedCommandsParse reads every cohortsync command line of README
// and docs/*.md and parses it with the real command tree: each names an
// existing command and only flags that command has. A renamed flag or a
// flag bound to fewer commands fails here rather than in a newcomer's
// first hour.
func TestDocumentedCommandsParse(t *testing.T) {
	t.Parallel()
	docs, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, filepath.Join("..", "..", "README.md"))
	checked := 0
	for _, path := range docs {
		for _, line := range shellLines(t, path) {
			m := docCommand.FindStringSubmatch(line.text)
			if m == nil {
				continue
			}
			args := shellWords(m[1])
			if len(args) == 0 || strings.HasPrefix(args[0], "[") {
				continue
			}
			root := newCLI(nil, nil, map[string]string{}).newRootCmd()
			cmd, rest, err := root.Find(args)
			if err != nil {
				t.Errorf("%s:%d: %q: %v", path, line.n, line.text, err)
				continue
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Errorf("%s:%d: %q: %s: %v", path, line.n, line.text, cmd.CommandPath(), err)
			}
			checked++
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d documented command lines; the pattern no longer finds them", checked)
	}
}

// TestClientCommandsTakeNoServerFlags: a command that only talks to a
// running server has no flags of settings it would ignore.
func TestClientCommandsTakeNoServerFlags(t *testing.T) {
	t.Parallel()
	root := newCLI(nil, nil, map[string]string{}).newRootCmd()
	for _, path := range [][]string{{"segments", "list"}, {"datapoints"}, {"tokens", "create"}, {"version"}} {
		cmd, _, err := root.Find(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{config.FlagHTTPAddr, config.FlagDataDir, config.FlagKafkaBrokers, config.FlagClickHouseAddr, config.FlagConfig} {
			if cmd.Flags().Lookup(name) != nil || cmd.InheritedFlags().Lookup(name) != nil {
				t.Errorf("%s has --%s, which it never reads", cmd.CommandPath(), name)
			}
		}
	}
	serve, _, _ := root.Find([]string{"serve"})
	if serve.Flags().Lookup(config.FlagHTTPAddr) == nil {
		t.Error("serve lost --http-addr")
	}
}

type docLine struct {
	n    int
	text string
}

// shellLines returns the lines of the fenced code blocks of a Markdown
// file, with continuation lines joined and comments cut.
func shellLines(t *testing.T, path string) []docLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []docLine
	in, pending, start := false, "", 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			in = !in
			continue
		}
		if !in {
			continue
		}
		if pending == "" {
			start = n
		}
		if s, ok := strings.CutSuffix(strings.TrimRight(l, " "), "\\"); ok {
			pending += s + " "
			continue
		}
		full := strings.TrimSpace(pending + l)
		pending = ""
		if i := strings.Index(full, " # "); i >= 0 {
			full = strings.TrimSpace(full[:i])
		}
		out = append(out, docLine{start, full})
	}
	return out
}

// shellWords splits s into words as a POSIX shell would for the simple
// quoting the docs use: single and double quotes, no expansions. It stops
// at a pipe or redirection.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case (r == '|' || r == '>' || r == '<' || r == '&' || r == ';') && !inWord:
			return words
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
