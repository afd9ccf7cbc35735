package plugin

import (
	"bytes"
	"log/slog"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// hclogger gives go-plugin (which logs through hclog) the host's slog
// logger: each line it writes, including the plugin's stderr that it
// forwards, becomes one record.
func hclogger(log *slog.Logger, path string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "plugin",
		Level:      hclog.Info,
		Output:     &lineWriter{log: log.With("pluginPath", path)},
		JSONFormat: false,
		// The plugin's own lines carry their time.
		DisableTime: true,
	})
}

type lineWriter struct {
	mu  sync.Mutex
	log *slog.Logger
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := bytes.TrimSpace(w.buf[:i]); len(line) > 0 {
			w.log.Info(string(line))
		}
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
