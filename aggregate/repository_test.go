package aggregate_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
)

func TestSaveThenLoad(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	repo := newRepo(t, store, accountConfig())

	a := repo.New("a1")
	require.Equal(t, "a1", a.ID())
	require.NoError(t, a.Open("ada"))
	require.NoError(t, a.Deposit(100))
	require.NoError(t, a.Withdraw(30))
	require.Equal(t, int64(70), a.balance, "Record applies at once")
	require.Equal(t, []any{opened{"ada"}, deposited{100}, withdrawn{30}}, a.Changes())
	require.Zero(t, a.Version())

	require.NoError(t, repo.Save(ctx, a))
	require.Equal(t, uint64(3), a.Version())
	require.Empty(t, a.Changes())
	require.NoError(t, repo.Save(ctx, a), "nothing recorded: nothing to do")

	b, err := repo.Load(ctx, "a1")
	require.NoError(t, err)
	require.Equal(t, uint64(3), b.Version())
	require.Equal(t, "a1", b.ID())
	require.Equal(t, accountState{"ada", true, 70}, accountState{b.owner, b.open, b.balance})

	evs := streamEvents(t, ctx, store, repo.Stream("a1"))
	require.Len(t, evs, 3)
	for i, typ := range []string{"opened", "deposited", "withdrawn"} {
		require.Equal(t, typ, evs[i].Type)
		require.Equal(t, uuid.Version(7), evs[i].ID.Version())
		require.Empty(t, evs[i].Metadata, "no metadata without a context that carries some, and no schema key at version 1")
	}
	require.JSONEq(t, `{"amount":100}`, string(evs[1].Data))

	// Saving on top of the loaded aggregate continues the stream.
	require.NoError(t, b.Deposit(5))
	require.NoError(t, repo.Save(ctx, b))
	require.Equal(t, uint64(4), b.Version())
}

func TestLoadNotFound(t *testing.T) {
	t.Parallel()
	repo := newRepo(t, newStore(t), accountConfig())
	_, err := repo.Load(ctxT(t), "nobody")
	require.ErrorIs(t, err, aggregate.ErrNotFound)
	require.ErrorContains(t, err, "account/nobody")

	_, err = repo.Load(ctxT(t), "bad{id}")
	require.ErrorIs(t, err, eventstore.ErrInvalidName)
}

func TestSaveConflicts(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	repo := newRepo(t, newStore(t), accountConfig())

	first, second := repo.New("a1"), repo.New("a1")
	require.NoError(t, first.Open("ada"))
	require.NoError(t, second.Open("bob"))
	require.NoError(t, repo.Save(ctx, first))
	err := repo.Save(ctx, second)
	require.ErrorIs(t, err, eventstore.ErrConflict, "New means a new stream")
	var ce *eventstore.ConflictError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, uint64(1), ce.Actual)

	// Two writers that loaded the same version: one wins.
	x, err := repo.Load(ctx, "a1")
	require.NoError(t, err)
	y, err := repo.Load(ctx, "a1")
	require.NoError(t, err)
	require.NoError(t, x.Deposit(1))
	require.NoError(t, y.Deposit(2))
	require.NoError(t, repo.Save(ctx, x))
	require.ErrorIs(t, repo.Save(ctx, y), eventstore.ErrConflict)
	z, err := repo.Load(ctx, "a1")
	require.NoError(t, err)
	require.Equal(t, int64(1), z.balance)
}

func TestMetadataFromContext(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	repo := newRepo(t, store, accountConfig())

	cmdCtx := aggregate.WithCorrelation(ctx, "req-1")
	cmdCtx = aggregate.WithCausation(cmdCtx, "cmd-1")
	cmdCtx = aggregate.WithMetadata(cmdCtx, "user", "ada")
	cmdCtx = aggregate.WithMetadata(cmdCtx, "tmp", "x")
	cmdCtx = aggregate.WithMetadata(cmdCtx, "tmp", "") // removes
	require.Equal(t, map[string]string{"correlation_id": "req-1", "causation_id": "cmd-1", "user": "ada"}, aggregate.MetadataFrom(cmdCtx))
	require.Nil(t, aggregate.MetadataFrom(ctx), "the parent context is untouched")

	_, err := repo.Update(cmdCtx, "a1", func(a *account) error {
		if err := a.Open("ada"); err != nil {
			return err
		}
		return a.Deposit(10)
	})
	require.NoError(t, err)
	evs := streamEvents(t, ctx, store, repo.Stream("a1"))
	require.Len(t, evs, 2)
	for _, ev := range evs {
		require.Equal(t, "req-1", aggregate.CorrelationID(ev))
		require.Equal(t, "cmd-1", aggregate.CausationID(ev))
		require.Equal(t, "ada", ev.Metadata["user"])
	}

	// A handler reacting to an event: caused by it, same correlation.
	hctx := aggregate.CausedBy(ctx, evs[1])
	require.Equal(t, map[string]string{"correlation_id": "req-1", "causation_id": evs[1].ID.String()}, aggregate.MetadataFrom(hctx))
	_, err = repo.Update(hctx, "a1", func(a *account) error { return a.Withdraw(1) })
	require.NoError(t, err)
	evs = streamEvents(t, ctx, store, repo.Stream("a1"))
	require.Equal(t, "req-1", aggregate.CorrelationID(evs[2]))
	require.Equal(t, evs[1].ID.String(), aggregate.CausationID(evs[2]))

	// An event without a correlation starts one.
	bare := eventstore.Event{ID: evs[0].ID}
	require.Equal(t, evs[0].ID.String(), aggregate.MetadataFrom(aggregate.CausedBy(ctx, bare))["correlation_id"])

	// "schema" is the toolkit's.
	_, err = repo.Update(aggregate.WithMetadata(ctx, "schema", "9"), "a1", func(a *account) error { return a.Deposit(1) })
	require.ErrorContains(t, err, `metadata key "schema" is reserved`)
	require.Len(t, streamEvents(t, ctx, store, repo.Stream("a1")), 3)
}

type mystery struct{ X int }

func TestUnregisteredTypeOnLoad(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	repo := newRepo(t, store, accountConfig())
	_, err := repo.Update(ctx, "a1", func(a *account) error { return a.Open("ada") })
	require.NoError(t, err)
	_, err = store.Append(ctx, repo.Stream("a1"), eventstore.Exact(1), eventstore.EventData{Type: "renamed-later", Data: []byte(`{}`)})
	require.NoError(t, err)

	_, err = repo.Load(ctx, "a1")
	require.ErrorIs(t, err, aggregate.ErrUnknownEventType)
	require.ErrorContains(t, err, `"renamed-later"`)
	require.ErrorContains(t, err, "account/a1")
	require.ErrorContains(t, err, "version 2")

	_, err = repo.Update(ctx, "a1", func(a *account) error { return a.Deposit(1) })
	require.ErrorIs(t, err, aggregate.ErrUnknownEventType, "Update does not skip either")
}

func TestUnregisteredTypeOnSave(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	repo := newRepo(t, store, accountConfig())

	a := repo.New("a1")
	require.NoError(t, a.Open("ada"))
	a.Record(mystery{1})
	err := repo.Save(ctx, a)
	require.ErrorIs(t, err, aggregate.ErrUnknownEventType)
	require.ErrorContains(t, err, "aggregate_test.mystery")
	require.ErrorContains(t, err, "account/a1")
	require.ErrorContains(t, err, "registered: deposited, opened, withdrawn")
	require.Empty(t, streamEvents(t, ctx, store, repo.Stream("a1")), "nothing appended, not even the registered event")

	b := repo.New("a2")
	b.Record(&opened{Owner: "ada"})
	err = repo.Save(ctx, b)
	require.ErrorIs(t, err, aggregate.ErrUnknownEventType)
	require.ErrorContains(t, err, "record the value, not a pointer")

	c := repo.New("a3")
	c.Record(nil)
	require.ErrorIs(t, repo.Save(ctx, c), aggregate.ErrUnknownEventType)
}

// failingCodec fails on demand.
type failingCodec struct {
	aggregate.JSONCodec
	marshal, unmarshal error
}

func (c failingCodec) Marshal(v any) ([]byte, error) {
	if c.marshal != nil {
		return nil, c.marshal
	}
	return c.JSONCodec.Marshal(v)
}

func (c failingCodec) Unmarshal(b []byte, v any) error {
	if c.unmarshal != nil {
		return c.unmarshal
	}
	return c.JSONCodec.Unmarshal(b, v)
}

func TestFailingCodec(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	errMarshal, errUnmarshal := errors.New("marshal broke"), errors.New("unmarshal broke")
	withCodec := func(c aggregate.Codec) aggregate.Config[*account] {
		cfg := accountConfig()
		cfg.Events[1] = aggregate.Event[deposited]("deposited", aggregate.WithCodec(c))
		return cfg
	}

	bad := newRepo(t, store, withCodec(failingCodec{marshal: errMarshal}))
	_, err := bad.Update(ctx, "a1", func(a *account) error {
		if err := a.Open("ada"); err != nil {
			return err
		}
		return a.Deposit(5)
	})
	require.ErrorIs(t, err, errMarshal)
	require.ErrorContains(t, err, "account/a1")
	require.Empty(t, streamEvents(t, ctx, store, bad.Stream("a1")), "nothing appended")

	good := newRepo(t, store, accountConfig())
	_, err = good.Update(ctx, "a1", func(a *account) error {
		if err := a.Open("ada"); err != nil {
			return err
		}
		return a.Deposit(5)
	})
	require.NoError(t, err)
	unreadable := newRepo(t, store, withCodec(failingCodec{unmarshal: errUnmarshal}))
	_, err = unreadable.Load(ctx, "a1")
	require.ErrorIs(t, err, errUnmarshal)
	require.ErrorContains(t, err, `account/a1 at version 2, type "deposited"`)
}

// A ledger whose payment event went through three schema versions:
//
//	v1 {"amt": 150}
//	v2 {"amount": 150}                     (renamed)
//	v3 {"amount": 150, "currency": "EUR"}  (currency added; old ones were EUR)
type paid struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

type ledger struct {
	aggregate.Root
	payments []paid
}

func (l *ledger) Apply(e any) {
	if p, ok := e.(paid); ok {
		l.payments = append(l.payments, p)
	}
}

func ledgerConfig() aggregate.Config[*ledger] {
	return aggregate.Config[*ledger]{
		Category: "ledger",
		New:      func() *ledger { return new(ledger) },
		Events: []aggregate.EventType{aggregate.Event[paid]("paid",
			aggregate.SchemaVersion(3),
			aggregate.Upcast(1, func(b []byte) ([]byte, error) {
				var v1 struct {
					Amt int64 `json:"amt"`
				}
				if err := json.Unmarshal(b, &v1); err != nil {
					return nil, err
				}
				return json.Marshal(map[string]any{"amount": v1.Amt})
			}),
			aggregate.Upcast(2, func(b []byte) ([]byte, error) {
				var v2 map[string]any
				if err := json.Unmarshal(b, &v2); err != nil {
					return nil, err
				}
				v2["currency"] = "EUR"
				return json.Marshal(v2)
			}),
		)},
	}
}

func TestUpcasterChain(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	repo := newRepo(t, store, ledgerConfig())
	stream := repo.Stream("l1")

	// Events written by older builds, as they sit in Redis.
	_, err := store.Append(ctx, stream, eventstore.NoStream,
		eventstore.EventData{Type: "paid", Data: []byte(`{"amt":150}`)},                                              // v1: no schema key
		eventstore.EventData{Type: "paid", Data: []byte(`{"amt":20}`), Metadata: map[string]string{"schema": "1"}},   // v1, explicit
		eventstore.EventData{Type: "paid", Data: []byte(`{"amount":7}`), Metadata: map[string]string{"schema": "2"}}, // v2
	)
	require.NoError(t, err)
	// And one by this build.
	_, err = repo.Update(ctx, "l1", func(l *ledger) error {
		l.Record(paid{Amount: 3, Currency: "USD"})
		return nil
	})
	require.NoError(t, err)

	l, err := repo.Load(ctx, "l1")
	require.NoError(t, err)
	require.Equal(t, []paid{{150, "EUR"}, {20, "EUR"}, {7, "EUR"}, {3, "USD"}}, l.payments)

	evs := streamEvents(t, ctx, store, stream)
	require.Equal(t, "3", evs[3].Metadata["schema"], "the current schema version is stored")
	require.JSONEq(t, `{"amt":150}`, string(evs[0].Data), "stored events are never rewritten")

	// The same decoding is available to other readers (projections).
	e, err := repo.Registry().Decode(evs[0])
	require.NoError(t, err)
	require.Equal(t, paid{150, "EUR"}, e)

	// A version this build cannot read is an error, not a guess.
	for _, schema := range []string{"4", "0", "x"} {
		_, err := repo.Registry().Decode(eventstore.Event{Stream: stream, Version: 9, Type: "paid", Data: []byte(`{}`), Metadata: map[string]string{"schema": schema}})
		require.ErrorIs(t, err, aggregate.ErrSchema, schema)
		require.ErrorContains(t, err, `ledger/l1 at version 9, type "paid"`)
	}
	// An upcaster that fails names where.
	_, err = repo.Registry().Decode(eventstore.Event{Stream: stream, Version: 9, Type: "paid", Data: []byte(`not json`)})
	require.ErrorContains(t, err, "upcast ledger/l1 at version 9")
}

func TestRegistryRefusesBadTypes(t *testing.T) {
	t.Parallel()
	up := func(b []byte) ([]byte, error) { return b, nil }
	cases := map[string]struct {
		types []aggregate.EventType
		want  string
	}{
		"none":           {nil, "no event types"},
		"zero":           {[]aggregate.EventType{{}}, "not made by aggregate.Event"},
		"empty name":     {[]aggregate.EventType{aggregate.Event[opened]("")}, "must not be empty"},
		"brace":          {[]aggregate.EventType{aggregate.Event[opened]("a{b")}, "must not contain"},
		"same name":      {[]aggregate.EventType{aggregate.Event[opened]("x"), aggregate.Event[deposited]("x")}, `name "x" is used by both`},
		"same type":      {[]aggregate.EventType{aggregate.Event[opened]("x"), aggregate.Event[opened]("y")}, "registered twice"},
		"interface":      {[]aggregate.EventType{aggregate.Event[any]("x")}, "is an interface"},
		"schema 0":       {[]aggregate.EventType{aggregate.Event[opened]("x", aggregate.SchemaVersion(0))}, "schema version 0"},
		"upcast current": {[]aggregate.EventType{aggregate.Event[opened]("x", aggregate.Upcast(1, up))}, "current version is 1"},
		"gap":            {[]aggregate.EventType{aggregate.Event[opened]("x", aggregate.SchemaVersion(4), aggregate.Upcast(1, up), aggregate.Upcast(3, up))}, "no upcaster from 2 to 3"},
		"twice":          {[]aggregate.EventType{aggregate.Event[opened]("x", aggregate.SchemaVersion(3), aggregate.Upcast(1, up), aggregate.Upcast(1, up))}, "two upcasters"},
		"nil upcaster":   {[]aggregate.EventType{aggregate.Event[opened]("x", aggregate.SchemaVersion(2), aggregate.Upcast(1, nil))}, "nil upcaster"},
		"nil codec":      {[]aggregate.EventType{aggregate.Event[opened]("x", aggregate.WithCodec(nil))}, "nil codec"},
	}
	for name, c := range cases {
		_, err := aggregate.NewRegistry(c.types...)
		require.ErrorContains(t, err, c.want, name)
	}
	// A chain that starts late is fine: versions before it are gone.
	_, err := aggregate.NewRegistry(aggregate.Event[opened]("x", aggregate.SchemaVersion(3), aggregate.Upcast(2, up)))
	require.NoError(t, err)
}

func TestRepositoryConfig(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	_, err := aggregate.NewRepository[*account](nil, accountConfig())
	require.Error(t, err)

	for name, mutate := range map[string]func(*aggregate.Config[*account]){
		"category":  func(c *aggregate.Config[*account]) { c.Category = "a:b" },
		"new":       func(c *aggregate.Config[*account]) { c.New = nil },
		"events":    func(c *aggregate.Config[*account]) { c.Events = nil },
		"attempts":  func(c *aggregate.Config[*account]) { c.MaxAttempts = -1 },
		"backoff":   func(c *aggregate.Config[*account]) { c.MinBackoff, c.MaxBackoff = 10, 5 },
		"snapshots": func(c *aggregate.Config[*account]) { c.Snapshots.Store = nopSnapshots{} },
	} {
		cfg := accountConfig()
		mutate(&cfg)
		_, err := aggregate.NewRepository(store, cfg)
		require.Error(t, err, name)
	}
}

func TestConfigBuild(t *testing.T) {
	t.Parallel()
	a, err := accountConfig().Build("a1", opened{"ada"}, deposited{10}, withdrawn{4})
	require.NoError(t, err)
	require.Equal(t, uint64(3), a.Version())
	require.Equal(t, int64(6), a.balance)
	require.Empty(t, a.Changes())

	_, err = accountConfig().Build("a1", mystery{})
	require.ErrorIs(t, err, aggregate.ErrUnknownEventType)

	// An aggregate built in memory saves like any other, at its version.
	ctx, store := ctxT(t), newStore(t)
	repo := newRepo(t, store, accountConfig())
	require.NoError(t, a.Deposit(1))
	require.ErrorIs(t, repo.Save(ctx, a), eventstore.ErrConflict, "the stream is not at version 3")
}

func TestRecordNeedsARepository(t *testing.T) {
	t.Parallel()
	require.PanicsWithValue(t, "aggregate: Record on an aggregate not made by a Repository or Config.Build", func() {
		(&account{}).Record(opened{})
	})
}
