package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/redsource/redsource/aggregate"
)

// Category is the aggregate type of bank accounts: their streams are
// account/<id>.
const Category = "account"

// The events of an account. Stored type names are the Go names; data is
// JSON; amounts are integers, in cents.
//
// TransferSent and TransferReceived also carry "transfer", the transfer's
// ID: the idempotency key that keeps a retried transfer from debiting or
// crediting twice (see Bank.Transfer).
type (
	AccountOpened struct {
		Owner string `json:"owner"`
	}
	Deposited struct {
		Amount int64 `json:"amount"`
	}
	Withdrawn struct {
		Amount int64 `json:"amount"`
	}
	TransferSent struct {
		Amount   int64  `json:"amount"`
		To       string `json:"to"`
		Transfer string `json:"transfer"`
	}
	TransferReceived struct {
		Amount   int64  `json:"amount"`
		From     string `json:"from"`
		Transfer string `json:"transfer"`
	}
)

// Why a command is refused. Nothing is appended then.
var (
	ErrInsufficientFunds = errors.New("insufficient funds")
	ErrNotOpen           = errors.New("account not open")
	ErrAlreadyOpen       = errors.New("account already open")
	ErrInvalidAmount     = errors.New("amount must be a positive number of cents")
	ErrNoOwner           = errors.New("an account needs an owner")
	ErrSameAccount       = errors.New("transfer to the same account")
	ErrUnknownTarget     = errors.New("transfer to an account that is not open")
)

// isRefusal reports whether err is a domain rule refusing a command.
func isRefusal(err error) bool {
	for _, r := range []error{ErrInsufficientFunds, ErrNotOpen, ErrAlreadyOpen, ErrInvalidAmount, ErrNoOwner, ErrSameAccount, ErrUnknownTarget} {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// ErrBadEventData: a stored event whose data does not decode into its
// type, or decodes into an impossible value (a Deposited whose amount is
// not a positive integer). Such an event is poison for the projection and
// makes its account impossible to load.
var ErrBadEventData = errors.New("undecodable event data")

// checked is implemented by events that can tell whether their decoded
// value makes sense.
type checked interface{ check() error }

func positive(amount int64) error {
	if amount <= 0 {
		return fmt.Errorf("amount %d is not positive", amount)
	}
	return nil
}

func (e AccountOpened) check() error {
	if e.Owner == "" {
		return errors.New("no owner")
	}
	return nil
}
func (e Deposited) check() error { return positive(e.Amount) }
func (e Withdrawn) check() error { return positive(e.Amount) }
func (e TransferSent) check() error {
	if e.To == "" {
		return errors.New("no target account")
	}
	return positive(e.Amount)
}
func (e TransferReceived) check() error {
	if e.From == "" {
		return errors.New("no source account")
	}
	return positive(e.Amount)
}

// eventCodec is JSON that says ErrBadEventData when stored data cannot be
// an event of its type, so that callers tell a broken event from a broken
// server without reading error text.
type eventCodec struct{}

func (eventCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (eventCodec) Unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadEventData, err)
	}
	if c, ok := v.(checked); ok {
		if err := c.check(); err != nil {
			return fmt.Errorf("%w: %w", ErrBadEventData, err)
		}
	}
	return nil
}

// eventTypes lists the account events with their stored names. The
// repository, the projection and verify all decode with these.
func eventTypes() []aggregate.EventType {
	c := aggregate.WithCodec(eventCodec{})
	return []aggregate.EventType{
		aggregate.Event[AccountOpened]("AccountOpened", c),
		aggregate.Event[Deposited]("Deposited", c),
		aggregate.Event[Withdrawn]("Withdrawn", c),
		aggregate.Event[TransferSent]("TransferSent", c),
		aggregate.Event[TransferReceived]("TransferReceived", c),
	}
}

// Account is the aggregate. Its state is only what its rules need.
type Account struct {
	aggregate.Root
	opened  bool
	owner   string
	balance int64
	// Transfer IDs already debited (sent) and credited (received): a
	// transfer retried after a crash finds its ID here and records nothing.
	sent     map[string]bool
	received map[string]bool
}

// Apply is the one place where events change an account.
func (a *Account) Apply(event any) {
	a.balance += balanceChange(event)
	switch e := event.(type) {
	case AccountOpened:
		a.opened, a.owner = true, e.Owner
	case TransferSent:
		mark(&a.sent, e.Transfer)
	case TransferReceived:
		mark(&a.received, e.Transfer)
	}
}

// balanceChange is what an event does to a balance, in cents: the one
// definition the aggregate, the read model and verify share.
func balanceChange(event any) int64 {
	switch e := event.(type) {
	case Deposited:
		return e.Amount
	case Withdrawn:
		return -e.Amount
	case TransferSent:
		return -e.Amount
	case TransferReceived:
		return e.Amount
	}
	return 0
}

func mark(set *map[string]bool, id string) {
	if id == "" {
		return
	}
	if *set == nil {
		*set = map[string]bool{}
	}
	(*set)[id] = true
}

// Owner and Balance read the state.
func (a *Account) Owner() string  { return a.owner }
func (a *Account) Balance() int64 { return a.balance }
func (a *Account) Opened() bool   { return a.opened }

// Open opens the account.
func (a *Account) Open(owner string) error {
	switch {
	case a.opened:
		return ErrAlreadyOpen
	case owner == "":
		return ErrNoOwner
	}
	a.Record(AccountOpened{Owner: owner})
	return nil
}

// Deposit adds money.
func (a *Account) Deposit(amount int64) error {
	switch {
	case !a.opened:
		return ErrNotOpen
	case amount <= 0:
		return ErrInvalidAmount
	}
	a.Record(Deposited{Amount: amount})
	return nil
}

// Withdraw takes money out; the balance never goes below zero.
func (a *Account) Withdraw(amount int64) error {
	if err := a.canDebit(amount); err != nil {
		return err
	}
	a.Record(Withdrawn{Amount: amount})
	return nil
}

// SendTransfer debits the source side of transfer id. Sending an ID that
// was already sent records nothing and succeeds: the retry of a transfer
// whose debit got through.
func (a *Account) SendTransfer(id, to string, amount int64) error {
	if a.sent[id] {
		return nil
	}
	if to == a.ID() {
		return ErrSameAccount
	}
	if err := a.canDebit(amount); err != nil {
		return err
	}
	a.Record(TransferSent{Amount: amount, To: to, Transfer: id})
	return nil
}

// ReceiveTransfer credits the target side of transfer id, once.
func (a *Account) ReceiveTransfer(id, from string, amount int64) error {
	switch {
	case a.received[id]:
		return nil
	case !a.opened:
		return ErrNotOpen
	case amount <= 0:
		return ErrInvalidAmount
	}
	a.Record(TransferReceived{Amount: amount, From: from, Transfer: id})
	return nil
}

func (a *Account) canDebit(amount int64) error {
	switch {
	case !a.opened:
		return ErrNotOpen
	case amount <= 0:
		return ErrInvalidAmount
	case amount > a.balance:
		return ErrInsufficientFunds
	}
	return nil
}

// accountState is the snapshot payload (schema 1).
type accountState struct {
	Opened   bool     `json:"opened"`
	Owner    string   `json:"owner"`
	Balance  int64    `json:"balance"`
	Sent     []string `json:"sent,omitempty"`
	Received []string `json:"received,omitempty"`
}

func marshalAccount(a *Account) ([]byte, error) {
	return json.Marshal(accountState{Opened: a.opened, Owner: a.owner, Balance: a.balance,
		Sent: setList(a.sent), Received: setList(a.received)})
}

func unmarshalAccount(a *Account, payload []byte) error {
	var s accountState
	if err := json.Unmarshal(payload, &s); err != nil {
		return err
	}
	a.opened, a.owner, a.balance = s.Opened, s.Owner, s.Balance
	for _, id := range s.Sent {
		mark(&a.sent, id)
	}
	for _, id := range s.Received {
		mark(&a.received, id)
	}
	return nil
}

func setList(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
