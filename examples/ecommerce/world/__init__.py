"""The world outside the pipeline: a deterministic synthetic e-commerce shop.

The shop has users and items with latent taste vectors, users who browse in
sessions (view, add to cart, purchase) and reviewers who rate and describe what
they bought. Everything is drawn with numpy from the seed, so the same
`WorldConfig` always produces byte-identical records, and the work is
vectorised so that a million events take seconds.

What the data is built to contain, so that the pipeline has something real to
learn and to guard:

- **Taste.** A user is shown a popularity-biased set of items and picks among
  them by softmax of user-item affinity, so choices follow
  softmax(affinity + log popularity): a matrix-factorisation recommender can
  beat a popularity baseline.
- **A funnel.** Roughly 70 % views, 20 % add-to-cart, 10 % purchases; carts
  and purchases are likelier for items the user likes.
- **Sessions.** Events of a session are 30 s to 10 min apart; sessions of one
  user are more than 30 min apart.
- **Accounts.** Most accounts are months to years old; about 2 % were opened
  inside the current window (fake accounts of a shilling attack stand out
  against that).
- **Reviews.** Reviewers rate items they interacted with, the rating follows
  affinity, and the text's sentiment follows the rating with ~8 % noise.

A world is one *period* of activity (a window of `days` days) of one fixed
*population*: `build_world(cfg, period=-1)` is the week before
`build_world(cfg)`, with the same users and items.

The simulator is split by what each part draws: `config` (size, clock and
random streams), `population` (users and items), `activity` (the funnel and
sessions), `reviews` (who reviews what, and the review texts) and
`simulation` (`build_world`, and the `World` that formats its records).
"""
