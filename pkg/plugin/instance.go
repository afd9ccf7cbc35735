package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/plugin/internal/pluginpb"
)

// UnavailableError says a plugin could not serve a call: it crashed
// during the call, is being restarted, or was unloaded. It comes wrapped
// as transient (fault), since the same call may work in a moment.
type UnavailableError struct {
	Plugin string
	Type   string
	Reason string
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("plugin %s (%s) is unavailable: %s", e.Plugin, e.Type, e.Reason)
}

// instance is one loaded plugin and its process, which it restarts.
type instance struct {
	h    *Host
	path string
	sum  string
	meta *pluginpb.MetadataResponse

	mu     sync.Mutex
	client *goplugin.Client
	rpc    pluginpb.ConnectorClient // nil while (re)starting
	// ready is closed when rpc is set; a new one is made per restart.
	ready chan struct{}
	// broken is set by a call whose transport failed.
	broken bool
	// failing is set once a restart attempt has failed: calls are then
	// refused at once instead of waiting for the next attempt.
	failing  bool
	lastErr  error
	restarts int

	kick chan struct{} // wakes supervise after a broken call
	stop chan struct{} // closed by unload
	done chan struct{} // closed when supervise returns
	once sync.Once
}

func (in *instance) info() Info {
	m := in.meta
	caps := m.GetCapabilities()
	if caps == nil {
		caps = []string{}
	}
	i := Info{ID: m.GetPluginId(), Type: m.GetType(), Version: m.GetVersion(), Provider: m.GetProvider(),
		DisplayName: m.GetDisplayName(), Description: m.GetDescription(), Capabilities: caps,
		ConfigSchema: m.GetConfigSchema(), Path: in.path, Checksum: in.sum}
	if i.DisplayName == "" {
		i.DisplayName = i.Type
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	i.Restarts = in.restarts
	if in.client != nil && in.rpc != nil {
		if rc := in.client.ReattachConfig(); rc != nil {
			i.Pid = rc.Pid
		}
	}
	return i
}

func (in *instance) unavailable(reason string) error {
	return fault.Transient(&UnavailableError{Plugin: in.meta.GetPluginId(), Type: in.meta.GetType(), Reason: reason})
}

// get returns the plugin's client, waiting (bounded by ctx) while a
// first restart attempt is under way.
func (in *instance) get(ctx context.Context) (pluginpb.ConnectorClient, error) {
	for {
		in.mu.Lock()
		rpc, ready, failing, lastErr := in.rpc, in.ready, in.failing, in.lastErr
		in.mu.Unlock()
		select {
		case <-in.stop:
			return nil, in.unavailable("it was unloaded")
		default:
		}
		if rpc != nil {
			return rpc, nil
		}
		if failing {
			return nil, in.unavailable("it is being restarted after a crash (last attempt: " + lastErr.Error() + ")")
		}
		select {
		case <-ready:
		case <-in.stop:
			return nil, in.unavailable("it was unloaded")
		case <-ctx.Done():
			return nil, in.unavailable("it is being restarted after a crash")
		}
	}
}

// call runs fn against the plugin. The plugin answers failures in its
// messages, so a gRPC error means the transport failed: the process died
// or hung up. The call then fails transient and the plugin is restarted.
func (in *instance) call(ctx context.Context, fn func(pluginpb.ConnectorClient) error) error {
	rpc, err := in.get(ctx)
	if err != nil {
		return err
	}
	err = fn(rpc)
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.Unimplemented:
		return fault.Permanent(&UnavailableError{Plugin: in.meta.GetPluginId(), Type: in.meta.GetType(),
			Reason: "it does not implement this call (built against an older sdk?)"})
	case codes.Canceled, codes.DeadlineExceeded:
		if ctx.Err() != nil {
			return fault.Transient(fmt.Errorf("plugin %s: %w", in.meta.GetPluginId(), ctx.Err()))
		}
	}
	in.mu.Lock()
	if in.rpc == rpc {
		in.broken = true
	}
	in.mu.Unlock()
	select {
	case in.kick <- struct{}{}:
	default:
	}
	in.h.log.Warn("plugin call failed in transport; restarting the plugin", "plugin", in.meta.GetPluginId(),
		"type", in.meta.GetType(), "error", err.Error())
	return in.unavailable("it stopped during the call")
}

// supervise restarts the process when it exits or a call found its
// transport broken, until unload.
func (in *instance) supervise() {
	defer close(in.done)
	t := time.NewTicker(in.h.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-in.stop:
			return
		case <-in.kick:
		case <-t.C:
		}
		in.mu.Lock()
		c, broken := in.client, in.broken
		in.mu.Unlock()
		if !broken && c != nil && !c.Exited() {
			continue
		}
		in.restart()
	}
}

func (in *instance) restart() {
	in.mu.Lock()
	old := in.client
	in.client, in.rpc, in.broken, in.failing = nil, nil, false, false
	ready := make(chan struct{})
	in.ready = ready
	in.mu.Unlock()
	if old != nil {
		old.Kill()
	}
	log := in.h.log.With("plugin", in.meta.GetPluginId(), "type", in.meta.GetType(), "path", in.path)
	log.Warn("plugin process exited; restarting it")
	bo := in.h.cfg.Backoff()
	bo.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-in.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		c, rpc, meta, err := in.h.start(ctx, in.path, in.sum)
		if err == nil && meta.GetType() != in.meta.GetType() {
			c.Kill()
			err = fmt.Errorf("now provides type %s instead of %s", meta.GetType(), in.meta.GetType())
		}
		if err == nil {
			in.mu.Lock()
			select {
			case <-in.stop:
				in.mu.Unlock()
				c.Kill()
				return
			default:
			}
			in.client, in.rpc, in.failing, in.lastErr = c, rpc, false, nil
			in.restarts++
			close(ready)
			in.mu.Unlock()
			log.Info("plugin restarted", "restarts", in.restarts)
			return
		}
		in.mu.Lock()
		in.failing, in.lastErr = true, err
		in.mu.Unlock()
		wait := bo.NextBackOff()
		if wait == backoff.Stop {
			wait = 30 * time.Second
		}
		log.Warn("plugin restart failed; trying again", "error", err.Error(), "in", wait)
		select {
		case <-in.stop:
			return
		case <-time.After(wait):
		}
	}
}

// unload stops supervising, kills the process and removes the type from
// the registry. Connectors built before keep failing transient.
func (in *instance) unload() {
	in.once.Do(func() {
		close(in.stop)
		<-in.done
		in.mu.Lock()
		c := in.client
		in.client, in.rpc = nil, nil
		in.mu.Unlock()
		if c != nil {
			c.Kill()
		}
		in.h.cfg.Registry.Unregister(in.meta.GetType())
	})
}

var errNoSecrets = errors.New("the integration has secret references but no resolver was given")
