"""Which bidding strategies let a bid change do anything (pure rules, no I/O).

- Google Ads: ``ad_group.cpc_bid_micros`` "is used when the ad group's effective bidding
  strategy is Manual CPC ... and will be ignored" otherwise, and
  ``ad_group.effective_cpc_bid_micros`` is the CPC bid only "when the bidding strategy is
  one of manual cpc, enhanced cpc, page one promoted or target outrank share, otherwise
  the value will be null" (https://developers.google.com/google-ads/api/reference/rpc/v26/AdGroup).
  Under any other strategy (TARGET_CPA, MAXIMIZE_CONVERSIONS, ...) a CPC bid change is
  accepted and silently ignored.
- Meta: ``bid_amount`` is the cap of LOWEST_COST_WITH_BID_CAP and the target of COST_CAP;
  LOWEST_COST_WITHOUT_CAP bids automatically and LOWEST_COST_WITH_MIN_ROAS bids on a ROAS
  floor (https://developers.facebook.com/docs/marketing-api/bidding/overview/bid-strategy).

A strategy BudgetRadar has not read (None) refuses nothing here: the executors read it
before sending a bid.
"""

from __future__ import annotations

GOOGLE_CPC_STRATEGIES = frozenset({"MANUAL_CPC", "ENHANCED_CPC", "PAGE_ONE_PROMOTED", "TARGET_OUTRANK_SHARE"})
META_BID_STRATEGIES = frozenset({"LOWEST_COST_WITH_BID_CAP", "COST_CAP"})


def bid_change_refusal(platform: str, bid_strategy: str | None, *, subject: str = "the entity") -> str | None:
    """Why a bid change on an entity with ``bid_strategy`` would do nothing (None: it can work)."""
    if not bid_strategy:
        return None
    if platform == "google_ads" and bid_strategy not in GOOGLE_CPC_STRATEGIES:
        return (
            f"{subject} is in a campaign bidding with {bid_strategy}: Google Ads ignores ad group CPC bids "
            "under automated bidding (they apply only to Manual CPC, Enhanced CPC, Page One Promoted and "
            "Target Outrank Share). Change the campaign's bidding strategy or its targets instead."
        )
    if platform == "meta" and bid_strategy not in META_BID_STRATEGIES:
        return (
            f"{subject} bids with {bid_strategy}: Meta uses bid_amount only as the cap of "
            "LOWEST_COST_WITH_BID_CAP or the target of COST_CAP. Change the bid strategy first."
        )
    return None
