package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/cohortsync/cohortsync/internal/atomicfile"
)

// LocalServerFile is the name, under the data directory, of the file a
// running server describes itself in. Commands run on the same machine with
// the same --data-dir read it to work through the server instead of failing
// on the data directory's lock: a backfill lands through the server's API,
// a dry run counts with the server's identity directory.
const LocalServerFile = "server.json"

// LocalServer is what a running server tells local commands about itself.
type LocalServer struct {
	PID int `json:"pid"`
	// URL is the HTTP API's base URL, reachable from this machine.
	URL string `json:"url"`
	// KafkaBrokers are the brokers the server uses: the embedded broker's
	// address on the embedded default.
	KafkaBrokers []string `json:"kafka_brokers"`
	// Token is an admin token valid for this start of the server only. The
	// file is readable by the data directory's owner alone, who can read the
	// state itself: it grants nothing the file system does not already.
	Token string `json:"token"`
}

// writeLocalServer records ls under dataDir, replacing an older file
// atomically; remove deletes it again.
func writeLocalServer(dataDir string, ls LocalServer) (remove func() error, err error) {
	path := filepath.Join(dataDir, LocalServerFile)
	// atomicfile writes mode 0600: the token is for the owner alone.
	if err := atomicfile.WriteJSON(path, ls); err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	return func() error {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("service: remove %s: %w", path, err)
		}
		return nil
	}, nil
}

// ReadLocalServer reads what the server running on dataDir wrote about
// itself. found is false when there is no such file. The file outlives a
// server killed with SIGKILL, so callers read it only after the data
// directory's lock told them a process holds it.
func ReadLocalServer(dataDir string) (ls LocalServer, found bool, err error) {
	path := filepath.Join(dataDir, LocalServerFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return LocalServer{}, false, nil
	}
	if err != nil {
		return LocalServer{}, false, fmt.Errorf("service: read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, &ls); err != nil {
		return LocalServer{}, false, fmt.Errorf("service: %s: %w", path, err)
	}
	if ls.URL == "" || ls.Token == "" {
		return LocalServer{}, false, fmt.Errorf("service: %s names no URL or token", path)
	}
	return ls, true, nil
}

// HeldBy is called by a command that found dataDir locked (lockErr): it
// returns the running server to work through instead, having told the
// user so on w, or an error that says who holds the directory when no
// server does.
func HeldBy(dataDir string, lockErr error, w io.Writer) (LocalServer, error) {
	ls, found, err := ReadLocalServer(dataDir)
	if err != nil {
		return LocalServer{}, errors.Join(lockErr, err)
	}
	if !found {
		return LocalServer{}, fmt.Errorf("%w\nanother cohortsync command holds %s (a backfill, snapshot or parquet compact: a server would have written %s there); run this once it has finished", lockErr, dataDir, LocalServerFile)
	}
	fmt.Fprintf(w, "a running server (pid %d) holds %s: working through it at %s\n", ls.PID, dataDir, ls.URL)
	return ls, nil
}

// localURL is the base URL a client on this machine reaches a listener on
// addr with: a wildcard host (0.0.0.0, ::) answers on loopback too.
func localURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}
