// Package bus connects dtfleet to NATS JetStream: to an embedded nats-server on a local data
// directory when no URL is configured, or to an external cluster otherwise. Both modes return the
// same *Bus and then share every line of code (DESIGN.md guarantee 6). Provision creates or
// updates the streams and KV buckets idempotently.
//
// It may import proto and internal/config, and no role package.
package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

// Bus is a connection to JetStream, with the embedded server it started, if any.
type Bus struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	srv    *server.Server
	lock   *os.File // the flock on the embedded server's store (LockFile), nil otherwise
	logger *slog.Logger
	// ClientURL is the URL other processes can use to reach this bus ("" when the embedded
	// server does not listen).
	ClientURL string
	Replicas  int
	// auth is the credentials the embedded server requires on its listener (zero otherwise).
	auth Credentials
}

// Options tune Connect beyond the config file.
type Options struct {
	Name   string // client connection name
	Logger *slog.Logger
	// ListenOverride replaces cfg.Listen for the embedded server ("none" disables the listener,
	// "127.0.0.1:-1" picks a free port); tests and the demo use it.
	ListenOverride string
	// JoinStore is the nats.store_dir of the embedded server of another process on this host
	// that this connection joins through its listener (cfg.URL): Connect presents the
	// credentials that server generated there (AuthFile), and fails when it cannot read them.
	// Without it, a cfg.URL whose servers are all on this machine and that names no other
	// authentication uses the credentials in cfg.StoreDir if that directory has them.
	JoinStore string
	// MaxStore, when positive, caps the embedded server's JetStream file storage in bytes
	// (default: nats-server's, most of the disk's free space). Tests use it to fill the storage.
	MaxStore int64
}

// Connect starts the embedded server (cfg.URL empty) or connects to cfg.URL.
//
// The embedded server's file store is opened with SyncAlways: every write is fsynced before
// JetStream acknowledges it. nats-server's default syncs on a two-minute timer, so an
// acknowledged work item, result or checkpoint could vanish with the host; dtfleet's checkpoints
// move on those acknowledgements (DESIGN.md "Durability of the embedded server"), so losing them
// would lose events. The cost is an fsync per write, which the batching of results and
// checkpoints keeps low.
func Connect(ctx context.Context, cfg config.NATS, opts Options) (*Bus, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &Bus{logger: logger, Replicas: max(cfg.Replicas, 1)}
	nopts := []nats.Option{
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
	}
	nopts = append(nopts, connHandlers(logger)...)
	addr := cfg.URL
	if addr == "" {
		lock, srv, auth, err := startEmbedded(cfg, opts.ListenOverride, opts.MaxStore, logger)
		if err != nil {
			return nil, err
		}
		b.srv, b.lock, b.auth = srv, lock, auth
		b.Replicas = 1
		if srv.Addr() != nil {
			b.ClientURL = srv.ClientURL()
		}
		nopts = append(nopts, nats.InProcessServer(srv), auth.option())
		addr = srv.ClientURL()
	} else {
		auth, err := authOptions(cfg, opts.JoinStore, logger)
		if err != nil {
			return nil, err
		}
		nopts = append(nopts, auth...)
		b.ClientURL = addr
	}
	nc, err := nats.Connect(addr, nopts...)
	if err != nil {
		b.shutdownServer()
		if errors.Is(err, nats.ErrAuthorization) && cfg.URL != "" && !hasAuth(cfg) {
			return nil, fmt.Errorf("connecting to NATS %s: %w (the embedded server of `dtfleet run` requires the credentials in its nats.store_dir, file %s: "+
				"use the same nats.store_dir as that process, as a user who can read it)", redactURL(addr), err, AuthFile)
		}
		return nil, fmt.Errorf("connecting to NATS %s: %w", redactURL(addr), err)
	}
	b.NC = nc
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(30*time.Second))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	b.JS = js
	return b, nil
}

// startEmbedded locks the store (a *StoreLockedError when another process holds it) and starts
// the embedded server on it. The lock is released with the returned file, when the server stopped.
//
// The server requires the credentials in the store's AuthFile (generated at the first start) of
// every client, its listener's included: the listener is a TCP port any local user can reach, and
// without them anyone could read, publish to or purge the streams. A store directory it creates
// is owner-only (0700) for the same reason. A listener on an address other than loopback is
// reachable from the network without TLS, which it logs as a warning at every start.
func startEmbedded(cfg config.NATS, listenOverride string, maxStore int64, logger *slog.Logger) (lock *os.File, srv *server.Server, auth Credentials, err error) {
	// Callers that build config.NATS by hand (tests, tools) get the file's defaults.
	dir := cmp.Or(cfg.StoreDir, config.DefaultStoreDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, Credentials{}, fmt.Errorf("creating nats.store_dir %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, Credentials{}, fmt.Errorf("resolving nats.store_dir %s: %w", dir, err)
	}
	if lock, err = lockStore(abs); err != nil {
		return nil, nil, Credentials{}, err
	}
	defer func() {
		if err != nil && lock != nil {
			_ = lock.Close()
		}
	}()
	// After the lock: only the process that owns the store creates its credentials.
	if auth, err = embeddedCredentials(abs); err != nil {
		return nil, nil, Credentials{}, err
	}
	// The server holds a bcrypt hash, not the password: nothing in its memory or its config
	// dump gives the password away, and it does not warn about a plaintext password at every
	// start. The minimum cost keeps a client's authentication cheap; the password itself is 32
	// random bytes, so the hash's cost adds nothing an attacker would have to pay.
	hash, err := bcrypt.GenerateFromPassword([]byte(auth.Password.Reveal()), bcrypt.MinCost)
	if err != nil {
		return nil, nil, Credentials{}, fmt.Errorf("hashing the embedded server's password: %w", err)
	}
	sopts := &server.Options{
		Username:           auth.User,
		Password:           string(hash),
		ServerName:         "dtfleet-embedded",
		JetStream:          true,
		StoreDir:           abs,
		SyncAlways:         true,
		NoSigs:             true,
		NoLog:              true,
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  maxStore,
	}
	listen := cmp.Or(listenOverride, cfg.Listen, config.DefaultNATSListen)
	switch listen {
	case config.ListenNone:
		sopts.DontListen = true
	default:
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, nil, Credentials{}, fmt.Errorf("parsing nats.listen %q: %w", listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, nil, Credentials{}, fmt.Errorf("parsing nats.listen port %q: %w", port, err)
		}
		sopts.Host, sopts.Port = host, p
		if !isLoopback(host) {
			logger.Warn("SECURITY: the embedded NATS listener is on a non-loopback address without TLS: the credentials "+
				"and every event cross the network in clear; prefer nats.listen on 127.0.0.1, or a NATS cluster with TLS (nats.url)",
				"listen", listen)
		}
	}
	srv, err = server.NewServer(sopts)
	if err != nil {
		return nil, nil, Credentials{}, fmt.Errorf("starting embedded NATS: %w", err)
	}
	srv.SetLoggerV2(serverLogger{logger}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, nil, Credentials{}, fmt.Errorf("starting embedded NATS on %s (store %s): not ready after 30s (is another dtfleet using the port or the store?)", listen, abs)
	}
	logger.Info("embedded NATS started", "store_dir", abs, "listen", listen, "sync", "always")
	return lock, srv, auth, nil
}

// authOptions returns the options that authenticate to cfg.URL: the configured method, or the
// credentials of the embedded server on joinStore, or those in cfg.StoreDir when every server of
// cfg.URL is on this machine and cfg names no method (a role process joining `dtfleet run`). The
// local credentials never go to another host.
func authOptions(cfg config.NATS, joinStore string, logger *slog.Logger) ([]nats.Option, error) {
	var o []nats.Option
	switch {
	case joinStore != "":
		c, err := ReadCredentials(joinStore)
		if err != nil {
			return nil, fmt.Errorf("joining the embedded NATS server of nats.store_dir %s: %w", joinStore, err)
		}
		o = append(o, c.option())
	case !hasAuth(cfg) && localURLs(cfg.URL):
		c, err := ReadCredentials(cmp.Or(cfg.StoreDir, config.DefaultStoreDir))
		switch {
		case err == nil:
			o = append(o, c.option())
		case !errors.Is(err, fs.ErrNotExist):
			// Not fatal: the local server may be a cluster node that needs none. When it is an
			// embedded server, its refusal says which file it needs.
			logger.Warn("not using the embedded server's credentials in nats.store_dir", "err", err)
		}
	}
	if cfg.CredsFile != "" {
		o = append(o, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.User != "" {
		o = append(o, nats.UserInfo(cfg.User, cfg.Password.Reveal()))
	}
	if cfg.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("reading nats.nkey_file %s: %w", cfg.NKeyFile, err)
		}
		o = append(o, opt)
	}
	if cfg.TLS.InsecureSkipVerify {
		warnInsecure(logger)
	}
	return append(o, tlsOptions(cfg.TLS)...), nil
}

// redactURL drops user info from a NATS URL list before it is logged or wrapped in an error.
func redactURL(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("***")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// Close drains the connection and stops the embedded server, if any.
func (b *Bus) Close() {
	if b.NC != nil {
		_ = b.NC.Drain()
		deadline := time.Now().Add(5 * time.Second)
		for !b.NC.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		b.NC.Close()
	}
	b.shutdownServer()
}

func (b *Bus) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
		b.srv = nil
	}
	if b.lock != nil {
		_ = b.lock.Close() // after the server stopped writing to the store
		b.lock = nil
	}
}

// ClientOptions returns the options a NATS client needs, besides ClientURL, to connect to this
// bus's embedded server through its listener: its generated credentials. It returns nil for a
// bus on an external server. Tests and tools use it; the options hold the password, so they
// must not be printed.
func (b *Bus) ClientOptions() []nats.Option {
	if b.auth.User == "" {
		return nil
	}
	return []nats.Option{b.auth.option()}
}

// Embedded reports whether this bus runs its own server.
func (b *Bus) Embedded() bool { return b.srv != nil }

// StorageUsage reports how much of the JetStream file storage that streams without a byte limit
// (every KV bucket, the work stream) can use is used: used is the account's stored bytes minus
// those of the streams that reserve their MaxBytes (the results stream), room is the storage
// limit minus those reservations. The limit is the account's MaxStore when the account has one
// (an operator-configured NATS), else the embedded server's max file store; room is 0 when
// neither is known (a NATS cluster whose account has no storage limit: its servers' limits are
// not visible to a client). Replicated bytes count once per replica, as the server counts them.
func (b *Bus) StorageUsage(ctx context.Context) (used, room uint64, err error) {
	ai, err := b.JS.AccountInfo(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the JetStream account's storage: %w", err)
	}
	limit := ai.Limits.MaxStore
	if limit <= 0 && b.srv != nil {
		limit = b.srv.JetStreamConfig().MaxStore
	}
	if limit <= 0 {
		return 0, 0, nil
	}
	var inReserved uint64
	lister := b.JS.ListStreams(ctx)
	for info := range lister.Info() {
		if info.Config.MaxBytes > 0 && info.Config.Storage == jetstream.FileStorage {
			inReserved += min(info.State.Bytes, uint64(info.Config.MaxBytes)) * uint64(max(info.Config.Replicas, 1))
		}
	}
	if err := lister.Err(); err != nil {
		return 0, 0, fmt.Errorf("reading the JetStream account's storage: %w", err)
	}
	used = ai.Store - min(ai.Store, inReserved)
	if reserved := ai.ReservedStore; uint64(limit) > reserved {
		room = uint64(limit) - reserved
	} else {
		room = 1 // everything is reserved: any use is over the limit
	}
	return used, room, nil
}

// Settings are the retention knobs of Provision that come from the configuration. Both are
// required: their defaults live in internal/config (defaults.go), and SettingsFor derives them
// from a loaded configuration.
type Settings struct {
	// LeaseTTL is the TTL of the leases bucket: a leader lease whose holder died expires after it.
	LeaseTTL time.Duration
	// DedupeTTL is how long the dedupe records of delivered event keys live.
	DedupeTTL time.Duration
}

// SettingsFor derives the bus settings from a configuration, in this one place.
//
// The coordinator's and every lane shipper's leases share one bucket, and a JetStream KV bucket
// has one TTL, while the configuration has two lease TTLs (coordinator.lease_ttl_in_seconds and
// shipper.lease_ttl_in_seconds). The bucket takes the larger of the two. That is the safe choice:
// a role renews its lease every third of its own TTL and stops acting as the leader when it has
// not renewed for half of it, so a key that outlives its holder's TTL only delays a standby's
// take-over (to at most the larger TTL); a key that expired before its holder's TTL could let
// two leaders act at once.
func SettingsFor(cfg *config.Config) Settings {
	return Settings{
		LeaseTTL:  time.Duration(max(cfg.Coordinator.LeaseTTLInSeconds, cfg.Shipper.LeaseTTLInSeconds)) * time.Second,
		DedupeTTL: time.Duration(cfg.Shipper.DedupeTTLInHours) * time.Hour,
	}
}

// Retention of the bus that is not configurable.
const (
	// resultMaxBytes bounds the results stream; a full stream pushes back on workers.
	resultMaxBytes = 8 << 30
	// workerTTL is how long a worker's heartbeat outlives it; workers beat every few seconds.
	workerTTL = 30 * time.Second
)

// Provision creates or updates every stream and bucket dtfleet uses. It is idempotent and safe to
// run from every process at start-up, all at the same moment (createOrUpdateStream says how).
// Both settings must be positive.
func (b *Bus) Provision(ctx context.Context, s Settings) error {
	if s.LeaseTTL <= 0 || s.DedupeTTL <= 0 {
		return fmt.Errorf("provisioning the bus: lease TTL %s and dedupe TTL %s must be positive", s.LeaseTTL, s.DedupeTTL)
	}
	r := b.Replicas
	streams := []jetstream.StreamConfig{{
		Name:        proto.StreamWork,
		Description: "dtfleet slot work items",
		Subjects:    []string{proto.SubjectWorkAll},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    r,
		// Planned slots are republished under the same Nats-Msg-Id after a crash or fail-over;
		// the window must outlast a leader's lease expiry and restart by a wide margin.
		Duplicates: 2 * time.Hour,
	}, {
		Name:        proto.StreamResults,
		Description: "dtfleet result chunks and slot markers",
		Subjects:    []string{proto.SubjectResultAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    r,
		MaxAge:      14 * 24 * time.Hour,
		MaxBytes:    resultMaxBytes,
		Discard:     jetstream.DiscardNew,
		Duplicates:  10 * time.Minute,
		AllowDirect: true,
	}}
	for _, sc := range streams {
		err := b.retryProvision(ctx, "stream "+sc.Name, func(ctx context.Context) error {
			return createOrUpdateStream(ctx, b.JS, sc)
		})
		if err != nil {
			return err
		}
	}
	buckets := []jetstream.KeyValueConfig{
		{Bucket: proto.BucketPlan, Description: "plan checkpoints", History: 1},
		{Bucket: proto.BucketDelivered, Description: "delivery checkpoints", History: 1},
		{Bucket: proto.BucketDedupe, Description: "delivered event keys", TTL: s.DedupeTTL},
		{Bucket: proto.BucketLeases, Description: "leader leases", TTL: s.LeaseTTL},
		{Bucket: proto.BucketFailed, Description: "slots that failed for good"},
		{Bucket: proto.BucketWorkers, Description: "worker heartbeats", TTL: workerTTL},
		{Bucket: proto.BucketRate, Description: "fleet-wide request reservations"},
	}
	for _, kc := range buckets {
		kc.Replicas = r
		kc.Storage = jetstream.FileStorage
		err := b.retryProvision(ctx, "KV bucket "+kc.Bucket, func(ctx context.Context) error {
			return createOrUpdateKeyValue(ctx, b.JS, kc)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// createOrUpdateStream creates the stream sc, or updates it when it exists with another
// configuration (an upgrade changed a setting). It asks for a create first, not an update as
// nats.go's CreateOrUpdateStream does, because a fleet starts all at once and nats-server (2.15)
// never answers an update of a clustered stream whose creation another process has just
// proposed: the update is proposed on top of the in-flight assignment, only the stream's
// leader answers it, and that leader is not elected yet; the requester waits out its whole
// deadline. Concurrent identical creates are answered, every one of them, and a create of an
// existing stream with the same configuration is answered with that stream, so creating first
// is idempotent and needs one request when nothing changed. An update is sent only after the
// server said the stream exists with another configuration, when it has a leader to answer.
func createOrUpdateStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	_, err := js.CreateStream(ctx, sc)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		_, err = js.UpdateStream(ctx, sc)
	}
	return err
}

// createOrUpdateKeyValue is createOrUpdateStream for a KV bucket (the stream KV_<bucket>), for
// the same reason: nats.go's CreateOrUpdateKeyValue asks for an update first.
func createOrUpdateKeyValue(ctx context.Context, js jetstream.JetStream, kc jetstream.KeyValueConfig) error {
	_, err := js.CreateKeyValue(ctx, kc)
	if errors.Is(err, jetstream.ErrBucketExists) {
		_, err = js.UpdateKeyValue(ctx, kc)
	}
	return err
}

// Provisioning retries. A fleet starts all at once (docker compose up, a Kubernetes rollout):
// every process creates or updates the same streams and buckets while the cluster is still
// electing its meta leader and placing replicas, so a request times out or is refused for a
// while. Creating is idempotent, so each step is retried until it succeeds or ctx ends; only an
// answer that no retry can change (the server refused the configuration) is returned at once.
const (
	provisionAttempt    = 10 * time.Second // one create-or-update request
	provisionRetryFirst = 250 * time.Millisecond
	provisionRetryMax   = 5 * time.Second
)

// retryProvision runs step (one create-or-update of what) with a deadline per attempt, retrying
// transient failures with capped exponential backoff and a warning each time, until ctx ends.
func (b *Bus) retryProvision(ctx context.Context, what string, step func(context.Context) error) error {
	wait := provisionRetryFirst
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, provisionAttempt)
		err := step(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				b.logger.Info("provisioned after retries", "what", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil || !transientProvisionError(err) {
			return fmt.Errorf("provisioning %s: %w", what, err)
		}
		b.logger.Warn("provisioning failed; retrying (the cluster may still be starting)", "what", what,
			"attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("provisioning %s: %w (last error: %w)", what, ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, provisionRetryMax)
	}
}

// errCodeReplicasNotSupported is the server's answer to replicas above 1 on a server that is not
// clustered (JSStreamReplicasNotSupportedErr): nats.replicas names more servers than there are.
const errCodeReplicasNotSupported jetstream.ErrorCode = 10074

// transientProvisionError reports whether a create-or-update failure may clear by itself: a
// timeout, no responders, a cluster without a leader or not enough servers up yet. An API error
// about the configuration itself (a name in use with other settings, overlapping subjects) is
// not.
func transientProvisionError(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamNameInUse, jetstream.JSErrCodeStreamWrongLastSequence,
			jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount,
			errCodeReplicasNotSupported:
			return false
		}
		// 503 (temporarily unavailable, no meta leader) and 500 (insufficient resources while
		// peers join) are the cluster starting; 400s are the configuration.
		return apiErr.Code >= 500 || apiErr.Code == 408
	}
	return true // timeouts, no responders, a connection that is re-establishing
}

// KV opens a provisioned bucket.
func (b *Bus) KV(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := b.JS.KeyValue(ctx, bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("opening KV bucket %s: %w (run a dtfleet role once to provision the bus)", bucket, err)
		}
		return nil, fmt.Errorf("opening KV bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// WorkConsumer creates or updates the workers' shared durable pull consumer on the work stream
// and returns it. ackWait is how long a delivered work item may go unacknowledged (or without an
// in-progress ack) before it is delivered again; every worker of a fleet must use the same.
func (b *Bus) WorkConsumer(ctx context.Context, ackWait time.Duration) (jetstream.Consumer, error) {
	stream, err := b.JS.Stream(ctx, proto.StreamWork)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", proto.StreamWork, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       proto.ConsumerWorkers,
		Description:   "dtfleet workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 8192,
		MaxWaiting:    4096,
	})
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s: %w", proto.ConsumerWorkers, err)
	}
	return cons, nil
}

// MaxPayload is the largest message the server accepts, in bytes.
func (b *Bus) MaxPayload() int { return int(b.NC.MaxPayload()) }
