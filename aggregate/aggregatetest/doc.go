// Package aggregatetest tests an aggregate's decisions without a server:
// given past events, when a command runs, then these events were recorded,
// or this error was returned.
//
//	func TestWithdraw(t *testing.T) {
//		aggregatetest.For(t, accountConfig).
//			Given(Deposited{Amount: 100}).
//			When(func(a *Account) error { return a.Withdraw(30) }).
//			Then(Withdrawn{Amount: 30})
//	}
//
//	func TestOverdraw(t *testing.T) {
//		aggregatetest.For(t, accountConfig).
//			Given(Deposited{Amount: 10}).
//			When(func(a *Account) error { return a.Withdraw(30) }).
//			ThenError(ErrInsufficientFunds)
//	}
//
// [For] takes the same aggregate.Config as the production repository, so the
// scenario uses the same event types and codecs: the given events go through
// their codec before they are applied, and [Scenario.Then] also checks that
// each recorded event comes back equal from its codec, which catches fields
// the codec would silently drop. [Scenario.ThenError] checks that a refused
// command recorded nothing.
package aggregatetest
