"""Channel-Bench-Macro MobileNet space (seed "cbm-mobilenet").

Style: width list. `WIDTHS = [c0, ..., c6]` holds the seven searchable widths, one literal each;
every coupling (block input/output = c0 or c4) is computed in code. Set to the middle key
2222222 (90.82 % mean CIFAR-10 accuracy, rank 8,607 of 16,384: room to search). Stem 3x3 conv 3 -> c0, then four inverted residual
blocks (1x1 expand-BN-ReLU, depthwise 3x3-BN-ReLU, 1x1 project-BN, identity added when in == out
and stride 1) written (in, expanded, out, stride): (c0, c1, c0, 1), (c0, c2, c0, 1),
(c0, c3, c4, 2), (c4, c5, c4, 1); 1x1 conv c4 -> c6, BN, ReLU; global average pool; linear
c6 -> classes. Convs are bias-free, the linear has a bias, so the build matches the table's
`params` and (fvcore, conv + linear, 16x16 input) `flops`.
About 0.47M parameters at 3x32x32 with 10 classes.
"""
import torch
import torch.nn as nn

WIDTHS = [64, 384, 384, 384, 128, 768, 512]


def supported_hyperparameters():
    return {'lr', 'momentum'}


class InvertedResidual(nn.Module):
    def __init__(self, inp, hidden, oup, stride):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        )
        self.use_res = stride == 1 and inp == oup

    def forward(self, x):
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        num_classes = out_shape[0]
        c0, c1, c2, c3, c4, c5, c6 = WIDTHS
        self.stem = nn.Sequential(
            nn.Conv2d(in_shape[1], c0, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c0),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            InvertedResidual(c0, c1, c0, 1),
            InvertedResidual(c0, c2, c0, 1),
            InvertedResidual(c0, c3, c4, 2),
            InvertedResidual(c4, c5, c4, 1),
        )
        self.head = nn.Sequential(
            nn.Conv2d(c4, c6, 1, bias=False),
            nn.BatchNorm2d(c6),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c6, num_classes)

    def forward(self, x):
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(x, 1))

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.CrossEntropyLoss().to(self.device),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])

    def learn(self, train_data):
        self.train()
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 3)
            self.optimizer.step()
