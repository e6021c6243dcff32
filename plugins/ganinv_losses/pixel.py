"""Pixel losses on the degraded images: mean squared and mean absolute error over known pixels."""
from ganinv_core.hooks import Loss
from ganinv_core.metrics import masked_mean


class MSE(Loss):
    """Mean squared error over known pixels and channels, per image."""
    name = 'mse'
    help = 'mean squared error over known pixels'
    cuda_graph_safe = True

    def forward(self, ctx):
        """[N] mean_(known c,h,w) (pred - target)^2."""
        return masked_mean((ctx.pred - ctx.target).square(), ctx.mask)


class L1(Loss):
    """Mean absolute error over known pixels and channels, per image."""
    name = 'l1'
    help = 'mean absolute error over known pixels'
    cuda_graph_safe = True

    def forward(self, ctx):
        """[N] mean_(known c,h,w) |pred - target|."""
        return masked_mean((ctx.pred - ctx.target).abs(), ctx.mask)
